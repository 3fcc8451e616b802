"""The edge: what runs on the Pi beside the chamber (``chamber-bridge poll``).

``polling/`` reads the instruments on a steady clock, one thread per bus; ``outbox`` keeps every
reading and run marker durable until the uploader acknowledges it; ``publisher`` sends the
outbox in seq order and answers commands; ``runs`` writes run markers; ``service`` ties them
together and publishes the status.
"""

"""A whole simulated MBE chamber: :mod:`.model`, the physics coupling the instruments, and :mod:`.mbe`, the
instruments themselves, served on TCP."""

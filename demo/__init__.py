"""A demo legacy service for the default profile, so `./run.sh` has something to front."""

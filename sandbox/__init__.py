"""Local emulators of the providers fulfill writes to."""

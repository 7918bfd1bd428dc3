"""What every layer may use: the one-line user error and the process group."""

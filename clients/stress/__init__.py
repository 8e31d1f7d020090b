"""The fault-and-load suite (`make stress`): bad inputs, overload, cancellation, SIGTERM, hot reload, kill -9."""

"""The test suite; one process runs MindSpore and gRPC, so the runtime environment is set first."""
import runtime_env

runtime_env.configure()

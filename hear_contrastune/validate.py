"""Run the official HEAR validator (hearvalidator 2021.0.2) on a model, without TensorFlow.

The validator imports TensorFlow at module level but uses it only to recognise TensorFlow
models (`isinstance(model, tf.Module)`) and to check them. For a PyTorch module nothing of
TensorFlow runs, so a placeholder module whose `Module` no object is an instance of lets the
unmodified validator check the PyTorch path. Usage:

    python -m hear_contrastune.validate [--model CHECKPOINT_OR_BACKBONE] [--device cpu]
"""

import importlib.machinery
import subprocess
import sys
import types


def validate(model: str, device: str = "cpu") -> subprocess.CompletedProcess:
    """Validate `hear_contrastune` with `model` in a child process; returns its result."""
    cmd = [sys.executable, "-m", "hear_contrastune.validate", "--model", model, "--device", device]
    return subprocess.run(cmd, capture_output=True, text=True)


def main() -> None:
    placeholder = types.ModuleType("tensorflow")
    placeholder.Module = type("Module", (), {})  # nothing we pass is a TensorFlow module
    # a spec without origin: importlib.util.find_spec("tensorflow") (torch._dynamo asks, when
    # transformers imports it) must not fail on a module that has none
    placeholder.__spec__ = importlib.machinery.ModuleSpec("tensorflow", None)
    sys.modules.setdefault("tensorflow", placeholder)
    from hearvalidator.validate import main as validator_main

    sys.argv = ["hear-validator", "hear_contrastune", *sys.argv[1:]]
    validator_main()


if __name__ == "__main__":
    main()

__version__ = "0.2.0"

# `from kocall import Transcriber` without making `import kocall` pay for torch and numba.
_LAZY = {"Transcriber": "kocall.transcribe", "Transcript": "kocall.transcribe", "VadConfig": "kocall.vad"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kocall' has no attribute '{name}'")

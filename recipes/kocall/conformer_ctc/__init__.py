"""Conformer-CTC acoustic model: model.py (network), train.py (`kocall train`),
model_dir.py (the final model directory), decode.py (decoding, by the decoder recipe)."""

"""The embedded default corpus: synthetic Korean call-centre telephone speech.

grammar (sentences) -> voices (espeak-ng Korean) -> kocall.telephone (channel) ->
generate (hackathon 2019 directory layout) -> cli (`kocall synth`).
"""

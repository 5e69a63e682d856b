"""``plantray synth``: write a PlantNet-like synthetic dataset."""

from plantray.synth.dataset import SynthConfig, synthesize

CONFIG = SynthConfig
run = synthesize

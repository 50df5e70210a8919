"""The synthetic world: a procedural 2.5-D world rendered into the CVUSA, CVACT or VIGOR on-disk layout."""

from cvgl.synth.cvusa import SynthConfig, synth_config_from_dict, write_synthetic, write_synthetic_cvusa

__all__ = ["SynthConfig", "synth_config_from_dict", "write_synthetic", "write_synthetic_cvusa"]

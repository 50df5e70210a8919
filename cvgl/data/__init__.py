"""Dataset adapters (synthetic world, CVUSA, CVACT, VIGOR) that turn a dataset root into manifests.

The synthetic world lives in :mod:`cvgl.data.synth` (entry point ``write_synthetic_cvusa``), with the world
generator in :mod:`cvgl.data.synth_world` and the renderers in :mod:`cvgl.data.synth_render`.
"""

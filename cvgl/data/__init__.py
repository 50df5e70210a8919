"""Dataset adapters (CVUSA, CVACT, VIGOR) that turn a dataset root in its published layout into manifests.

The synthetic world is not here: :mod:`cvgl.synth` writes it in these layouts, and these adapters read it back.
"""

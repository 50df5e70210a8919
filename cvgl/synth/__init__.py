"""The synthetic world: a procedural 2.5-D world rendered into the CVUSA, CVACT or VIGOR on-disk layout, read
back by the real datasets' adapters (:mod:`cvgl.data`) like the published releases.

Modules, each importing only those above it:

* ``world``: the procedural world (roads, ground, buildings, trees) as north-up rasters;
* ``render``: its satellite tiles and ground panoramas, in :mod:`cvgl.geometry`'s conventions;
* ``config``: ``SynthConfig``, every knob of the two (``config.yaml``'s ``synth``), checked;
* ``locations``: a world big enough for N camera positions on its roads;
* ``writing``: what the layout writers share (seeds, rendering on worker processes, previews, ``world.json``);
* ``cvusa``, ``cvact``, ``vigor``: one writer per on-disk layout;
* ``dataset``: ``write_synthetic``, the layout named by ``cfg.layout`` written atomically.
"""

from cvgl.synth.config import LAYOUTS, VIGOR_CITIES, SynthConfig, synth_config_from_dict
from cvgl.synth.dataset import write_synthetic, write_synthetic_cvusa

__all__ = ["LAYOUTS", "VIGOR_CITIES", "SynthConfig", "synth_config_from_dict", "write_synthetic",
           "write_synthetic_cvusa"]

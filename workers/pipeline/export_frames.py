"""The plate as the export stage reads it: plate-resolution light for the edge refiner's guide and
working-resolution grey frames for the temporal steadier's flow, each frame decoded once (a couple
of decoded frames kept: the steadier looks one or two frames ahead of the frame being written)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from schemas import PipelineOptions
from workers.io.plate import PlateDecoder, to_display_uint8
from workers.pipeline.edges import EdgeRefiner, edge_refiner, plate_guide
from workers.pipeline.export import ExportedLayer, frame_logits
from workers.pipeline.scratch import LayerStore
from workers.pipeline.temporal import TemporalSteadier


class ExportFrames:
    def __init__(self, decoder: PlateDecoder, frames: Sequence[int], keep: int = 3, keep_grey: int = 8) -> None:
        self.decoder, self.frames = decoder, list(frames)
        self.keep, self.keep_grey = keep, keep_grey
        self._light: OrderedDict[int, np.ndarray] = OrderedDict()
        self._grey: OrderedDict[int, np.ndarray] = OrderedDict()
        self.decoded = 0

    def _linear(self, frame: int) -> np.ndarray:
        if frame in self._light:
            self._light.move_to_end(frame)
            return self._light[frame]
        self.decoded += 1
        linear = self.decoder.linear(frame)
        self._light[frame] = linear
        while len(self._light) > self.keep:
            self._light.popitem(last=False)
        return linear

    def guide(self, frame: int) -> np.ndarray:
        """The edge refiner's guide of a plate frame (``plate_guide``)."""
        return plate_guide(self._linear(frame))

    def grey(self, pos: int) -> np.ndarray:
        """The frame at ``pos`` as the models see it (working resolution, display view), in grey."""
        if pos not in self._grey:
            rgb = to_display_uint8(self._linear(self.frames[pos]), self.decoder.size, self.decoder.colour)
            self._grey[pos] = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
            while len(self._grey) > self.keep_grey:
                self._grey.popitem(last=False)
        return self._grey[pos]


@dataclass
class ExportAids:
    """What a job's options add to its export: the edge refiner and the plate it reads, and the
    temporal steadier. One home, so farm tasks and the synthetic suite export alike."""

    frames: ExportFrames
    edges: EdgeRefiner | None
    steadier: TemporalSteadier | None


def export_aids(
    options: PipelineOptions,
    decoder: PlateDecoder,
    frames: Sequence[int],
    store: LayerStore,
    layers: list[ExportedLayer],
    device: str = "cpu",
) -> ExportAids:
    source = ExportFrames(decoder, frames)
    plate = decoder.plate
    edges = edge_refiner(options.edges, options.edge_eps, (plate.width, plate.height), decoder.size, device)
    reach = steady_reach(options, edges)
    steadier = None
    if reach:
        steadier = TemporalSteadier(
            grey=source.grey,
            logits=lambda pos: frame_logits(store, pos, layers),
            positions=len(frames),
            reach=reach,
        )
    return ExportAids(source, edges, steadier)


AUTO_STEADY_FRAMES = 2


def steady_reach(options: PipelineOptions, edges: EdgeRefiner | None) -> int:
    """Neighbours the steadier blends: the job's choice, or by default 2 where edges are not
    refined (``mattefarm compare``: J up, the thin stick most) and 0 where they are
    (``mattefarm bench-edges``: after colour unmixing it adds nothing)."""
    if options.steady_frames is not None:
        return options.steady_frames
    return 0 if edges is not None else AUTO_STEADY_FRAMES

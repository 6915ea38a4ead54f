"""What the delivered files say about how they were made: matte EXR headers and the job manifest.

Standard attributes (``owner``, ``comments``, ``capDate``, ``utcOffset``, and ``timeCode`` /
``framesPerSecond`` copied from the plate, never invented) plus namespaced ``mattefarm/*``
provenance, which Nuke shows as ``exr/mattefarm/...``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from farm_config.version import VERSION
from schemas import JobStatus, StageName, StageState
from schemas.frames import format_frame_range
from workers.io.colour import ColourConverter
from workers.io.exr import capture_date
from workers.io.images import probe_image
from workers.io.plate import PlateInfo

RANDOM_WEIGHTS_WARNING = (
    "RANDOM WEIGHTS: this job ran untrained models (MATTEFARM_WEIGHTS=random); "
    "its mattes are meaningless and only its timings are real"
)


def random_weights(job: JobStatus) -> bool:
    return job.models is not None and job.models.weights == "random"


def objects_table(job: JobStatus) -> dict[str, dict[str, Any]]:
    """Layer name → label, instance number, prompt, score and frame span."""
    return {
        layer.name: {
            "label": layer.label,
            "instance": int(layer.name.rsplit("_", 1)[-1]) if layer.name.rsplit("_", 1)[-1].isdigit() else None,
            "prompt": job.spec.prompt,
            "score": round(layer.mean_score, 4),
            "first": layer.first_frame,
            "last": layer.last_frame,
        }
        for layer in job.layers
    }


def matte_header(job: JobStatus, plate: PlateInfo, colour: ColourConverter, inference_size: tuple[int, int]) -> dict:
    """Attributes shared by every frame of the job's mattes."""
    comments = f"Matte Farm roto for {job.shot} v{job.version:03d}, prompt '{job.spec.prompt}'"
    header: dict[str, Any] = {
        "owner": job.user,
        "comments": f"{RANDOM_WEIGHTS_WARNING}. {comments}" if random_weights(job) else comments,
        # The job's creation time, not the write time, so a re-run writes byte-identical frames.
        **capture_date(job.created_at),
        "mattefarm/version": VERSION,
        "mattefarm/service": f"mattefarm@{VERSION}",
        "mattefarm/job": job.id,
        "mattefarm/prompt": job.spec.prompt,
        "mattefarm/models": json.dumps(job.models.model_dump() if job.models else {}),
        "mattefarm/weights": job.models.weights if job.models else "unknown",
        "mattefarm/randomWeights": "true" if random_weights(job) else "false",
        "mattefarm/source": plate.pattern.display,
        "mattefarm/inferenceSize": (np.int32(inference_size[0]), np.int32(inference_size[1])),
        "mattefarm/inputColourspace": colour.colourspace,
        "mattefarm/colourConversion": colour.describe(),
        "mattefarm/strategy": str(job.spec.options.strategy),
        "mattefarm/objects": json.dumps(objects_table(job), ensure_ascii=False),
    }
    if plate.info.fps is not None:
        header["framesPerSecond"] = plate.info.fps
    return header


class FrameHeaders:
    """Per-frame attributes: the source frame number, and the plate frame's own timecode."""

    def __init__(self, plate: PlateInfo) -> None:
        self.plate = plate
        self.has_timecode = plate.info.timecode is not None
        # The EXR header and the review burn-in both ask for the frame being exported: read it once.
        self._last: tuple[int, Any] = (plate.frames[0], plate.info.timecode)

    def timecode(self, frame: int) -> Any:
        if not self.has_timecode:
            return None
        if frame != self._last[0]:
            self._last = (frame, probe_image(self.plate.path_for(frame), self.plate.info.part).timecode)
        return self._last[1]

    def __call__(self, frame: int) -> dict[str, Any]:
        header: dict[str, Any] = {"mattefarm/sourceFrame": int(frame)}
        timecode = self.timecode(frame)
        if timecode is not None:
            header["timeCode"] = timecode
        return header

    def timecode_text(self, frame: int) -> str | None:
        tc = self.timecode(frame)
        if tc is None:
            return None
        return f"{tc.hours:02d}:{tc.minutes:02d}:{tc.seconds:02d}:{tc.frame:02d}"


def job_manifest(
    job: JobStatus,
    plate: PlateInfo,
    colour: ColourConverter,
    written: list[Path],
    review: dict[str, str] | None,
) -> dict[str, Any]:
    geo = plate.geometry
    return {
        "mattefarm_version": VERSION,
        "job": job.id,
        "user": job.user,
        "show": job.show,
        "shot": job.shot,
        "version": job.version,
        "random_weights": random_weights(job),
        "warnings": job.warnings,
        "plate": {
            "pattern": plate.pattern.display,
            "format": plate.format,
            "part": plate.info.part,
            "width": geo.width,
            "height": geo.height,
            "display_window": geo.display_window,
            "data_window": geo.data_window,
            "pixel_aspect": geo.pixel_aspect,
            "fps": str(plate.info.fps) if plate.info.fps is not None else None,
            "colourspace": colour.colourspace,
            "colour_conversion": colour.describe(),
        },
        "frames": format_frame_range(plate.frames),
        "frame_count": len(plate.frames),
        "missing_frames": job.missing_frames,
        "prompt": job.spec.prompt,
        "options": job.spec.options.model_dump(mode="json"),
        "models": job.models.model_dump() if job.models else None,
        "layers": [layer.model_dump() for layer in job.layers],
        "objects": objects_table(job),
        "stages": [
            {"name": st.name, "seconds": st.seconds, "frames": st.frames_done}
            for st in job.stages
            if st.state == StageState.SUCCEEDED or st.name == StageName.EXPORT
        ],
        "counters": job.counters.model_dump(),
        "output_pattern": job.output_pattern,
        "files": [p.name for p in written],
        "review": review,
    }

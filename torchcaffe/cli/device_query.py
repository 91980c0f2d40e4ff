"""`torchcaffe device_query [-gpu 0,1|all]`: what each CUDA device is, in
`caffe device_query`'s lines (the properties PyTorch reports). Without
`-gpu` every device is listed (Caffe lists none)."""
from __future__ import annotations

import logging

from .flags import GPU, gpu_ids

log = logging.getLogger(__name__)

FLAGS = (GPU,)

# Caffe's label -> the torch device-property attribute (those torch has)
_PROPERTIES = (
    ("Major revision number", "major"),
    ("Minor revision number", "minor"),
    ("Name", "name"),
    ("Total global memory", "total_memory"),
    ("Total shared memory per block", "shared_memory_per_block"),
    ("Registers per multiprocessor", "regs_per_multiprocessor"),
    ("Warp size", "warp_size"),
    ("Number of multiprocessors", "multi_processor_count"),
)


def run(values: dict) -> int:
    import torch

    log.info("Querying GPUs %s", values["gpu"])
    ids = gpu_ids(values["gpu"]) if values["gpu"] else list(range(torch.cuda.device_count()))
    if not torch.cuda.is_available() or not ids:
        log.info("No cuda device present.")
        return 0
    for device_id in ids:
        if not 0 <= device_id < torch.cuda.device_count():
            log.error("No cuda device %d (%d present)", device_id, torch.cuda.device_count())
            return 1
        props = torch.cuda.get_device_properties(device_id)
        log.info("%-31s%d", "Device id:", device_id)
        for label, attribute in _PROPERTIES:
            if hasattr(props, attribute):
                log.info("%-31s%s", label + ":", getattr(props, attribute))
    return 0

"""A reader for the safetensors format, written from its specification
(https://github.com/huggingface/safetensors#format), without the safetensors package:

    8 bytes   N, unsigned little-endian 64-bit: length of the header
    N bytes   JSON object: name -> {"dtype", "shape", "data_offsets": [begin, end]}, and an
              optional "__metadata__" object of strings
    rest      the byte buffer; offsets are relative to its start, data is little-endian, C order
"""

import json
import os
import struct
import sys
from typing import Dict, List, Tuple

import torch

# dtype name -> (torch dtype, bytes per element)
DTYPES = {
    "F64": (torch.float64, 8),
    "F32": (torch.float32, 4),
    "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2),
    "I64": (torch.int64, 8),
    "I32": (torch.int32, 4),
    "I16": (torch.int16, 2),
    "I8": (torch.int8, 1),
    "U8": (torch.uint8, 1),
    "BOOL": (torch.bool, 1),
}

MAX_HEADER = 100 * 1024 * 1024


class SafetensorsError(ValueError):
    pass


def read_header(path: str) -> Tuple[Dict[str, dict], int]:
    """Returns (entries without __metadata__, offset of the byte buffer in the file)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise SafetensorsError(f"{path}: {len(head)} bytes, shorter than the 8-byte header length")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER or 8 + n > size:
            raise SafetensorsError(f"{path}: header length {n} does not fit in a file of {size} bytes")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SafetensorsError(f"{path}: header is not valid UTF-8 JSON: {e}") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: header is not a JSON object")
    header.pop("__metadata__", None)
    data_len = size - 8 - n
    spans: List[Tuple[int, int, str]] = []
    for name, e in header.items():
        if not isinstance(e, dict) or set(e) != {"dtype", "shape", "data_offsets"}:
            raise SafetensorsError(f"{path}: tensor {name!r}: expected dtype, shape, data_offsets; got {e!r}")
        if e["dtype"] not in DTYPES:
            raise SafetensorsError(f"{path}: tensor {name!r}: unsupported dtype {e['dtype']!r}")
        shape, offs = e["shape"], e["data_offsets"]
        if (not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape)
                or not isinstance(offs, list) or len(offs) != 2
                or not all(isinstance(o, int) for o in offs)):
            raise SafetensorsError(f"{path}: tensor {name!r}: bad shape {shape!r} or data_offsets {offs!r}")
        begin, end = offs
        count = 1
        for d in shape:
            count *= d
        if not 0 <= begin <= end <= data_len:
            raise SafetensorsError(f"{path}: tensor {name!r}: data_offsets {offs} outside the "
                                   f"{data_len}-byte buffer")
        if end - begin != count * DTYPES[e["dtype"]][1]:
            raise SafetensorsError(f"{path}: tensor {name!r}: {end - begin} bytes for shape {shape} "
                                   f"of {e['dtype']} ({count * DTYPES[e['dtype']][1]} expected)")
        spans.append((begin, end, name))
    spans.sort()
    for (b0, e0, n0), (b1, _, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise SafetensorsError(f"{path}: tensors {n0!r} and {n1!r} overlap")
    return header, 8 + n


def load(path: str) -> Dict[str, torch.Tensor]:
    """All tensors of one file, as CPU tensors of their stored dtype."""
    header, base = read_header(path)
    out: Dict[str, torch.Tensor] = {}
    with open(path, "rb") as f:
        for name, e in header.items():
            dtype, _ = DTYPES[e["dtype"]]
            begin, end = e["data_offsets"]
            f.seek(base + begin)
            buf = bytearray(f.read(end - begin))
            if end == begin:
                t = torch.empty(0, dtype=dtype)
            else:
                # frombuffer reads native byte order and the format is little-endian
                if sys.byteorder != "little":
                    raise SafetensorsError("big-endian hosts are not supported")
                t = torch.frombuffer(buf, dtype=dtype)
            out[name] = t.reshape(e["shape"]).clone()
    return out


def save(path: str, tensors: Dict[str, torch.Tensor]) -> None:
    """Writes tensors in the format (used by the tests to build checkpoints)."""
    names = {v[0]: k for k, v in DTYPES.items()}
    header = {}
    chunks = []
    offset = 0
    for name, t in tensors.items():
        t = t.detach().contiguous().cpu()
        data = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": names[t.dtype],
                        "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    raw = json.dumps(header).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for c in chunks:
            f.write(c)

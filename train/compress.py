"""Sign compression of the model change at a sync: 1-bit packed signs (plus a float32 scale) through an all-gather."""
from __future__ import annotations

from typing import Any, Final

import numpy as np
import torch

from train.errors import TrainError

__all__ = ["SCHEMES", "BITORDER", "pack_signs", "unpack_signs", "payload_bytes", "majority_vote", "SignCompressor"]

SCHEMES = ("none", "sign", "ef-sign")
#: Bit k of byte j holds coordinate 8 j + k (numpy.packbits(..., bitorder="little")); part of the wire format.
BITORDER: Final = "little"
_SCALE_BYTES = 4  # ef-sign: the float32 scale ||p||_1 / d travels in front of the packed bits


def pack_signs(x: np.ndarray) -> np.ndarray:
    """Bits 1 where x >= 0 (sign +1; zero counts as +1) and 0 where x < 0, 8 per byte: ceil(d / 8) uint8."""
    return np.packbits(np.asarray(x).reshape(-1) >= 0, bitorder=BITORDER)


def unpack_signs(packed: np.ndarray, d: int) -> np.ndarray:
    """The d signs (+1 / -1, int8) that pack_signs packed; the padding bits of the last byte are ignored."""
    if packed.size != -(-d // 8):
        raise TrainError(f"packed signs of {d} coordinates need {-(-d // 8)} bytes, got {packed.size}")
    bits = np.unpackbits(packed, count=d, bitorder=BITORDER).astype(np.int8)
    return 2 * bits - 1


def payload_bytes(scheme: str, d: int) -> int:
    """Bytes one rank hands to the all-gather per sync: ceil(d / 8), plus 4 for ef-sign's float32 scale."""
    if scheme not in SCHEMES[1:]:
        raise TrainError(f"compression scheme must be one of {', '.join(SCHEMES[1:])}, got {scheme!r}")
    return -(-d // 8) + (_SCALE_BYTES if scheme == "ef-sign" else 0)


def majority_vote(signs: np.ndarray) -> np.ndarray:
    """sign(sum_k signs[k]) per coordinate (int8); a tie (sum 0, possible for even K) gives 0: no move."""
    return np.sign(signs.astype(np.int32).sum(axis=0)).astype(np.int8)


class SignCompressor:
    """The state of compressed syncs at each level: the anchor (model after the last sync) and the EF memory.

    At a sync each rank computes its model change delta = anchor - w (as in SPEC's w_t - w^k_{t+H}) and sends:

    * ``sign``: its packed signs; the new model is anchor - scale sign(sum_k sign(delta_k)) with scale = lr *
      sign_scale (ties give 0);
    * ``ef-sign``: p = delta + e, c = (||p||_1 / d) sign(p), e <- p - c; it sends the float32 scale and the packed
      sign(p); the new model is anchor - (1/K) sum_k c_k.

    Every rank decodes the same gathered bytes in the same order, so the new models are bitwise identical. The
    "block" anchor is the model after the last sync of either level (identical inside a block); the "global"
    anchor is the model after the last global sync (identical everywhere), so a global sync carries all the
    progress since then. Each level has its own error-feedback memory.
    """

    def __init__(self, scheme: str, d: int, *, dtype: torch.dtype, sign_scale: float = 1.0) -> None:
        if scheme not in SCHEMES[1:]:
            raise TrainError(f"compression scheme must be one of {', '.join(SCHEMES[1:])}, got {scheme!r}")
        if d < 1:
            raise TrainError(f"a compressed model needs d >= 1 parameters, got {d}")
        self.scheme, self.d, self.sign_scale = scheme, d, float(sign_scale)
        self.np_dtype = torch.empty(0, dtype=dtype).numpy().dtype
        self.anchor: dict[str, np.ndarray | None] = {"block": None, "global": None}
        self.memory = {lvl: np.zeros(d, dtype=self.np_dtype) for lvl in ("block", "global")}
        self.nbytes = payload_bytes(scheme, d)

    def set_anchor(self, w: np.ndarray, level: str | None = None) -> None:
        """Take `w` (a synchronised model) as the anchor of `level`, or of both levels when level is None."""
        for lvl in ("block", "global") if level is None else (level,):
            self.anchor[lvl] = np.array(w, dtype=self.np_dtype, copy=True).reshape(-1)

    def _anchor(self, level: str) -> np.ndarray:
        a = self.anchor[level]
        if a is None:
            raise TrainError(f"compressed sync at level {level!r} before its anchor was set; call set_anchor first")
        return a

    # -- one rank's side -------------------------------------------------------------------------------
    def encode(self, level: str, w: np.ndarray) -> np.ndarray:
        """This rank's payload (uint8, payload_bytes long) for the model `w`; updates the EF memory of `level`."""
        w = np.asarray(w, dtype=self.np_dtype).reshape(-1)
        if w.size != self.d:
            raise TrainError(f"model has {w.size} parameters, the compressor was built for {self.d}")
        delta = self._anchor(level) - w
        if self.scheme == "sign":
            return pack_signs(delta)
        p = delta + self.memory[level]
        scale = np.float32(np.abs(p).sum(dtype=np.float64) / self.d)
        c = scale.astype(self.np_dtype) * np.where(p >= 0, 1, -1).astype(self.np_dtype)
        self.memory[level] = p - c
        return np.concatenate([np.frombuffer(scale.tobytes(), dtype=np.uint8), pack_signs(p)])

    def decode(self, level: str, gathered: np.ndarray, size: int, lr: float) -> np.ndarray:
        """The new model from the `size` rank-ordered payloads in `gathered`; becomes the anchor(s)."""
        gathered = np.asarray(gathered, dtype=np.uint8).reshape(-1)
        if gathered.size != size * self.nbytes:
            raise TrainError(f"gathered payload holds {gathered.size} bytes, expected {size} * {self.nbytes}")
        blocks = gathered.reshape(size, self.nbytes)
        if self.scheme == "sign":
            signs = np.stack([unpack_signs(b, self.d) for b in blocks])
            update = majority_vote(signs).astype(self.np_dtype) * self.np_dtype.type(lr * self.sign_scale)
        else:
            update = np.zeros(self.d, dtype=self.np_dtype)
            for b in blocks:  # rank order, the same on every rank: bitwise identical sums
                scale = np.frombuffer(b[:_SCALE_BYTES].tobytes(), dtype=np.float32)[0].astype(self.np_dtype)
                update += scale * unpack_signs(b[_SCALE_BYTES:], self.d).astype(self.np_dtype)
            update /= self.np_dtype.type(size)
        new = self._anchor(level) - update
        self.set_anchor(new, "block")
        if level == "global":
            self.set_anchor(new, "global")
        return new

    # -- the collective --------------------------------------------------------------------------------
    def sync(self, level: str, w: torch.Tensor, *, backend: Any, lr: float) -> tuple[int, int]:
        """Compressed sync of the flat model `w` (in place) over `backend`'s ranks of `level`.

        Returns (bytes sent, bytes received) of this rank: the size of the buffer handed to the all-gather, and
        the bytes that all-gather wrote from the other ranks ((p - 1) times the former).
        """
        host = w.detach().cpu().numpy()
        send = self.encode(level, host)
        recv = backend.allgather_bytes(send, level)
        new = self.decode(level, recv, recv.size // send.size, lr)
        w.copy_(torch.from_numpy(new).to(w.device))
        return int(send.nbytes), int(recv.nbytes - send.nbytes)

    # -- checkpoints -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"scheme": self.scheme, "anchor": {k: None if v is None else v.copy() for k, v in self.anchor.items()},
                "memory": {k: v.copy() for k, v in self.memory.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["scheme"] != self.scheme:
            raise TrainError(f"checkpoint holds {state['scheme']!r} compression state, this run uses {self.scheme!r}")
        self.anchor = {k: None if v is None else np.array(v, dtype=self.np_dtype) for k, v in state["anchor"].items()}
        self.memory = {k: np.array(v, dtype=self.np_dtype) for k, v in state["memory"].items()}

"""A member's secrets at rest: AEAD under a key stretched from a passphrase with scrypt.

File layout: b"HEKS" ‖ version (1) ‖ scrypt n_log2, r, p ‖ salt (16) ‖ nonce (12) ‖
ChaCha20-Poly1305(key, nonce, secrets, aad = the preceding header). The file is created
with mode 0600, written to a temporary name, fsynced and renamed; a file readable by
group or others is refused.
"""

from __future__ import annotations

import os
import stat
import struct
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from he_agg.errors import KeyStoreError

__all__ = ["load_secret", "save_secret"]

_MAGIC = b"HEKS"
_HEAD = struct.Struct("<4sBBBB16s12s")
_N_LOG2, _R, _P = 15, 8, 1


def _key(passphrase: str, salt: bytes, n_log2: int, r: int, p: int) -> bytes:
    if not passphrase:
        raise KeyStoreError("an empty passphrase is not allowed")
    return Scrypt(salt=salt, length=32, n=1 << n_log2, r=r, p=p).derive(passphrase.encode())


def save_secret(path: Path, secret: bytes, passphrase: str) -> None:
    salt, nonce = os.urandom(16), os.urandom(12)
    head = _HEAD.pack(_MAGIC, 1, _N_LOG2, _R, _P, salt, nonce)
    sealed = ChaCha20Poly1305(_key(passphrase, salt, _N_LOG2, _R, _P)).encrypt(nonce, secret, head)
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, head + sealed)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def load_secret(path: Path, passphrase: str) -> bytes:
    path = Path(path)
    try:
        mode = path.stat().st_mode
        blob = path.read_bytes()
    except OSError as exc:
        raise KeyStoreError(f"cannot read {path}: {exc.strerror}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyStoreError(f"{path} is readable by others (mode {oct(mode & 0o777)}); chmod 600")
    if len(blob) < _HEAD.size + 16:
        raise KeyStoreError(f"{path} is not a he-agg key file")
    magic, version, n_log2, r, p, salt, nonce = _HEAD.unpack_from(blob)
    if magic != _MAGIC or version != 1 or not 10 <= n_log2 <= 22:
        raise KeyStoreError(f"{path} is not a he-agg key file")
    key = _key(passphrase, salt, n_log2, r, p)
    try:
        return ChaCha20Poly1305(key).decrypt(nonce, blob[_HEAD.size :], blob[: _HEAD.size])
    except InvalidTag as exc:
        raise KeyStoreError("wrong passphrase, or the key file was tampered with") from exc

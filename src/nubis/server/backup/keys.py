"""The master key (and the admin token) inside a backup, wrapped with the operator's passphrase:
scrypt derives a key from the passphrase, AES-256-GCM seals the secrets; the associated data is
the master key's fingerprint, so a wrapped key cannot be moved into another backup's manifest."""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from nubis.errors import BackupDamagedError, BackupKeyError, ValidationError
from nubis.server.backup.manifest import key_fingerprint

PASSPHRASE_ENV = "NUBIS_BACKUP_PASSPHRASE"
MIN_PASSPHRASE = 8
SCRYPT_N = 1 << 15  # 32 MiB and about 0.1 s per try: slow for a guesser, quick for the operator
SCRYPT_R = 8
SCRYPT_P = 1


@dataclass(frozen=True)
class KeyMaterial:
    master_key: bytes
    admin_token: str | None = None


def check_passphrase(passphrase: str) -> str:
    if len(passphrase) < MIN_PASSPHRASE:
        raise ValidationError(f"the backup passphrase must have at least {MIN_PASSPHRASE} characters")
    return passphrase


def _derive(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode())


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def wrap(material: KeyMaterial, passphrase: str) -> bytes:
    salt, nonce = os.urandom(16), os.urandom(12)
    secret = json.dumps({"master_key": _b64(material.master_key), "admin_token": material.admin_token})
    sealed = AESGCM(_derive(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)).encrypt(
        nonce, secret.encode(), key_fingerprint(material.master_key).encode())
    return json.dumps({"kdf": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P, "salt": _b64(salt),
                       "cipher": "aes-256-gcm", "nonce": _b64(nonce), "ciphertext": _b64(sealed)},
                      indent=1).encode()


def unwrap(blob: bytes, passphrase: str, *, fingerprint: str) -> KeyMaterial:
    """The key and token sealed in ``blob``; ``BackupKeyError`` for a wrong passphrase."""
    try:
        fields: dict[str, Any] = json.loads(blob)
        key = _derive(passphrase, base64.b64decode(fields["salt"]), int(fields["n"]), int(fields["r"]),
                      int(fields["p"]))
        nonce, sealed = base64.b64decode(fields["nonce"]), base64.b64decode(fields["ciphertext"])
    except (ValueError, KeyError, TypeError) as exc:
        raise BackupDamagedError(f"the wrapped key in the backup does not parse: {exc}") from None
    try:
        secret = json.loads(AESGCM(key).decrypt(nonce, sealed, fingerprint.encode()))
    except InvalidTag:
        raise BackupKeyError("wrong passphrase: it does not unwrap the master key in this backup") from None
    material = KeyMaterial(base64.b64decode(secret["master_key"]), secret.get("admin_token"))
    check_fingerprint(material.master_key, fingerprint, source="the unwrapped key")
    return material


def check_fingerprint(key: bytes, fingerprint: str, *, source: str) -> None:
    if key_fingerprint(key) != fingerprint:
        raise BackupKeyError(f"{source} is not the master key of the backed-up platform (its sha256 "
                             f"differs from the manifest's {fingerprint[:12]}…): its secrets would not "
                             "decrypt")


def decode_key_file(data: bytes, source: str) -> bytes:
    """A ``master.key`` file (base64 of 32 bytes, as ``nubis up`` writes it)."""
    try:
        key = base64.b64decode(data.strip(), validate=True)
    except ValueError:
        raise BackupKeyError(f"{source} is not a nubis master key (base64 of 32 bytes)") from None
    if len(key) != 32:
        raise BackupKeyError(f"{source} is not a nubis master key (it holds {len(key)} bytes, not 32)")
    return key


def encode_key_file(key: bytes) -> bytes:
    return base64.b64encode(key) + b"\n"

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from he_agg.errors import KeyStoreError
from keys.committee import CommitteeSetup
from keys.keystore import load_secret, save_secret
from keys.member import MemberSecrets


def test_secret_round_trip_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "member.key"
    save_secret(path, b"share bytes", "correct horse")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert b"share bytes" not in path.read_bytes()
    assert load_secret(path, "correct horse") == b"share bytes"


def test_wrong_passphrase_and_tampering_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "member.key"
    save_secret(path, b"share bytes", "correct horse")
    with pytest.raises(KeyStoreError, match="passphrase"):
        load_secret(path, "wrong")
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 1
    path.write_bytes(bytes(raw))
    os.chmod(path, 0o600)
    with pytest.raises(KeyStoreError):
        load_secret(path, "correct horse")


def test_group_readable_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "member.key"
    save_secret(path, b"x", "pw")
    os.chmod(path, 0o640)
    with pytest.raises(KeyStoreError, match="chmod 600"):
        load_secret(path, "pw")


def test_missing_file_and_empty_passphrase(tmp_path: Path) -> None:
    with pytest.raises(KeyStoreError):
        load_secret(tmp_path / "absent", "pw")
    with pytest.raises(KeyStoreError):
        save_secret(tmp_path / "k", b"x", "")


def test_member_secrets_survive_the_key_file(tmp_path: Path, committee: CommitteeSetup) -> None:
    member = committee.members[1]
    path = tmp_path / "m2.key"
    member.save(path, "pw", committee.params)
    back = MemberSecrets.load(path, "pw", committee.params)
    assert back.identity.public == member.identity.public
    assert np.array_equal(back.secret.coeffs, member.secret.coeffs)
    assert np.array_equal(back.threshold_share.words, member.threshold_share.words)

"""A whole federation on this machine: the aggregator, committee members and admin keys,
each party in its own process, talking over loopback HTTP (https with ``tls=True``: a
throwaway CA in ``root/tls`` that every party is given). Used by the pilot, the
simulation's http transport and the benchmarks; the CLI does the same by hand (README)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from clients.admin import Admin
from clients.harness.server_process import ServerProcess
from clients.harness.spec import federation_spec
from clients.harness.tls import make_test_ca
from clients.participant import Participant
from he_agg.api.states import FederationMode, KeygenPhase
from he_agg.params import ParameterSet
from he_agg.roster import RosterMember, SignedRoster
from keys.identity import Identity, save_identity

__all__ = ["LocalFederation"]

_PASSPHRASE = "local-federation"


@dataclass
class LocalFederation:
    """Start with ``start()``; ``stop()`` ends every process it started."""

    root: Path
    federation: str
    clients: list[str]
    params: ParameterSet | None = None
    members: int = 3
    threshold: int = 2
    k_min: int = 2
    mode: FederationMode = FederationMode.CKKS
    share_timeout: float = 30.0
    max_parameters: int = 10_000_000
    tls: bool = False  # serve https with a throwaway CA in root/tls; every party trusts it
    server: ServerProcess = field(init=False)
    admin: Identity = field(init=False)
    identities: dict[str, Identity] = field(default_factory=dict)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _admin_client: Admin | None = field(default=None, init=False, repr=False)
    roster: SignedRoster | None = field(default=None, init=False)

    @property
    def roster_file(self) -> Path:
        """The admin-signed roster every party pins (a file, as it would travel)."""
        return self.root / f"{self.federation}.roster.json"

    def start(self, timeout: float = 120.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.admin = Identity.generate(0)
        self.identities = {name: Identity.generate(0) for name in self.clients}
        committee = [Identity.generate(i) for i in range(1, self.members + 1)]
        self.server = self._server()
        self.server.start()
        spec = federation_spec(
            self.federation,
            {name: identity.public for name, identity in self.identities.items()},
            [member.public for member in committee],
            params=self.params,
            mode=self.mode,
            threshold=self.threshold,
            k_min=self.k_min,
            max_parameters=self.max_parameters,
            share_timeout=self.share_timeout,
        )
        self.admin_api().create_federation(spec)
        if self.mode == FederationMode.CKKS:
            # the admin hands every party the roster out of band: here, a file they all read
            self.roster = self.admin_api().signed_roster(spec)
            self.roster_file.write_text(self.roster.to_json())
            for member in committee:
                self._start_member(member)
            self._wait_for_keys(timeout)

    def _server(self) -> ServerProcess:
        admin_keys = [self.admin.public.signing_key.hex()]
        if not self.tls:
            return ServerProcess(self.root / "server", admin_keys)
        ca, cert, key = make_test_ca(self.root / "tls")
        return ServerProcess(self.root / "server", admin_keys, tls=(cert, key), ca_file=ca)

    @property
    def ca_file(self) -> Path | None:
        """The CA file the parties verify the server with; None over plain http."""
        return self.server.ca_file

    @property
    def verify(self) -> Path | bool:
        """``verify=`` for a :class:`SignedClient` (or the SDK) talking to this server."""
        return self.ca_file if self.ca_file is not None else True

    def _start_member(self, member: Identity, roster_file: Path | None = None) -> None:
        """Run ``member``'s agent; it pins ``roster_file`` (default: the first roster)."""
        folder = self.root / f"member-{member.index}"
        folder.mkdir(exist_ok=True)
        key = folder / "member.identity"
        save_identity(key, member, _PASSPHRASE)
        env = {**os.environ, "HE_AGG_PASSPHRASE": _PASSPHRASE}
        command = [
            *(sys.executable, "-m", "clients.cli", "committee", "run", self.federation),
            *("--key", str(key), "--state-dir", str(folder / "state")),
            *("--server", self.server.url, "--poll", "0.2"),
            *("--roster", str(roster_file or self.roster_file)),
        ]
        if self.ca_file is not None:
            command += ["--ca-file", str(self.ca_file)]
        with open(folder / "agent.log", "ab") as log:  # the child keeps its own copy
            self.processes.append(
                subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
            )

    def _wait_for_keys(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self.admin_api().federation(self.federation)
            if info.keygen_phase == KeygenPhase.READY and self._members_ready():
                return
            for index, process in enumerate(self.processes, start=1):
                if process.poll() is not None:  # e.g. refused the server's certificate
                    log = (self.root / f"member-{index}" / "agent.log").read_text()
                    raise RuntimeError(f"committee member {index} exited: {log[-2000:]}")
            time.sleep(0.2)
        raise TimeoutError("the committee did not finish key generation")

    def _members_ready(self) -> bool:
        return all(
            (self.root / f"member-{i}" / "state" / "member.key").exists()
            for i in range(1, self.members + 1)
        )

    # ---- key epochs and roster changes --------------------------------------------------
    def change_committee(
        self, *, remove: Sequence[int] = (), add: Sequence[int] = (), threshold: int | None = None
    ) -> SignedRoster:
        """Sign a roster without the members ``remove`` and with new members ``add`` (by
        index), start the new members' agents on that roster (handed to them out of band,
        as a file), and return it. The enrolled members follow it on their own."""
        newcomers = [Identity.generate(index) for index in add]
        signed = self.admin_api().change_roster(
            self.federation,
            remove_members=[f"member-{i}" for i in remove],
            add_members=[
                RosterMember(
                    f"member-{m.index}",
                    m.index,
                    m.public.signing_key.hex(),
                    m.public.encryption_key.hex(),
                )
                for m in newcomers
            ],
            threshold=threshold,
        )
        roster_file = self.root / f"{self.federation}.roster-v{signed.roster.version}.json"
        roster_file.write_text(signed.to_json())
        for member in newcomers:
            self._start_member(member, roster_file)
        return signed

    def wait_for_epoch(self, epoch: int, timeout: float = 120.0) -> None:
        """Until key epoch ``epoch`` is current (its DKG done, every member vouched)."""
        deadline = time.monotonic() + timeout
        while self.admin_api().federation(self.federation).epoch < epoch:
            if time.monotonic() > deadline:
                raise TimeoutError(f"key epoch {epoch} did not become current")
            time.sleep(0.2)

    def member_state(self, index: int) -> Path:
        return self.root / f"member-{index}" / "state"

    def admin_api(self) -> Admin:
        """The admin's client (one per federation, closed by ``stop``)."""
        if self._admin_client is None:
            self._admin_client = Admin(self.server.url, self.admin.signing, verify=self.verify)
        return self._admin_client

    def participant(self, name: str, show_progress: bool = False) -> Participant:
        return Participant(
            self.server.url,
            self.federation,
            name,
            self.identities[name].signing,
            verify=self.verify,
            show_progress=show_progress,
            roster=self.roster,
        )

    def client_key_file(self, name: str) -> Path:
        """The client's keys on disk, for a client running in its own process."""
        path = self.root / "clients" / f"{name}.identity"
        path.parent.mkdir(exist_ok=True)
        if not path.exists():
            save_identity(path, self.identities[name], _PASSPHRASE)
        return path

    @property
    def passphrase(self) -> str:
        return _PASSPHRASE

    def stop(self) -> None:
        if self._admin_client is not None:
            self._admin_client.close()
            self._admin_client = None
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        self.server.stop()

    def __enter__(self) -> LocalFederation:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

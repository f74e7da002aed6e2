"""The quickstart in Flower's deployment runtime, every party its own process on loopback:
the he-agg aggregator and a committee of three member agents (any two decrypt), a Flower
SuperLink, four SuperNodes (each with its own he-agg identity in --node-config), then
`flwr run` (flwr 1.42), whose ServerApp gets only the admin's key file.

Offline: the SuperLink is started with --disable-runtime-dependency-installation (its
SuperExec would otherwise build a per-run environment with `uv sync`, resolving the app's
dependencies from a package index; they are installed in this environment already),
Flower's telemetry and update check are off, and the CLI's connection to the SuperLink is
written to a private FLWR_HOME (config.toml), not ~/.flwr.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402
from heaggquickstart.task import Net, load_centralized_dataset, test  # noqa: E402

from clients.harness.local import LocalFederation  # noqa: E402
from clients.harness.server_process import free_port  # noqa: E402
from he_agg.params import derive_parameters  # noqa: E402
from keys.identity import save_identity  # noqa: E402

BIN = Path(sys.executable).parent  # flower-superlink, flower-supernode, flwr
FEDERATION = "flower-quickstart"


def start(command: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


def wait_for_port(address: str, process: subprocess.Popen[bytes], log: Path) -> None:
    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{log.stem} exited: {log.read_text()[-2000:]}")
        with socket.socket() as probe:
            if probe.connect_ex((host, int(port))) == 0:
                return
        time.sleep(0.2)
    raise SystemExit(f"{log.stem} does not listen on {address}")


def flower_home(root: Path, superlink: str) -> Path:
    """A FLWR_HOME whose default SuperLink connection is ours, insecure on loopback."""
    home = root / "flwr-home"
    home.mkdir()
    (home / "config.toml").write_text(
        '[superlink]\ndefault = "he-agg-local"\n\n'
        f'[superlink.he-agg-local]\naddress = "{superlink}"\ninsecure = true\n'
    )
    return home


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600, help="seconds for the run")
    parser.add_argument("--keep", action="store_true", help="keep the work folder and logs")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="he-agg-flower-deploy-"))
    params = derive_parameters(
        "flower-quickstart", k_max=args.nodes, committee_max=3, value_bits=16
    )
    federation = LocalFederation(
        root,
        FEDERATION,
        [f"client-{i}" for i in range(args.nodes)],
        params=params,
        members=3,
        threshold=2,
        k_min=args.nodes - 1,
    )
    processes: list[subprocess.Popen[bytes]] = []
    try:
        federation.start()
        print(f"he-agg aggregator at {federation.server.url}; committee keyed (t=2 of 3)")
        save_identity(root / "admin.key", federation.admin, federation.passphrase)
        link = f"127.0.0.1:{free_port()}"
        env = {
            **os.environ,
            "HE_AGG_PASSPHRASE": federation.passphrase,  # each party's key file
            "FLWR_HOME": str(flower_home(root, link)),
            "FLWR_TELEMETRY_ENABLED": "0",  # offline: no usage events,
            "FLWR_DISABLE_UPDATE_CHECK": "1",  # and no version check
            "OMP_NUM_THREADS": "1",
            # SuperLink and SuperNodes start `flower-superexec` by name
            "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")]),
        }
        superlink = [
            *(str(BIN / "flower-superlink"), "--insecure"),
            *("--host", "127.0.0.1", "--port", link.rsplit(":", 1)[1]),
            "--disable-runtime-dependency-installation",
        ]
        processes.append(start(superlink, root / "superlink.log", env))
        wait_for_port(link, processes[-1], root / "superlink.log")
        for i in range(args.nodes):
            key = federation.client_key_file(f"client-{i}")
            node_config = (
                f"partition-id={i} num-partitions={args.nodes} "
                f"he-agg-name='client-{i}' he-agg-key='{key}'"
            )
            supernode = [
                *(str(BIN / "flower-supernode"), "--insecure", "--superlink", link),
                *("--port", str(free_port()), "--node-config", node_config),
            ]
            processes.append(start(supernode, root / f"supernode-{i}.log", env))
        final_model = root / "final_model.pt"
        run_config = " ".join(
            [
                f"num-server-rounds={args.rounds}",
                f"min-nodes={args.nodes}",
                f"he-agg-server='{federation.server.url}'",
                f"he-agg-federation='{FEDERATION}'",
                f"he-agg-admin-key='{root / 'admin.key'}'",
                f"he-agg-roster='{federation.roster_file}'",
                f"he-agg-spool-dir='{root / 'spool'}'",
                f"final-model='{final_model}'",
            ]
        )
        command = [str(BIN / "flwr"), "run", str(HERE), "--run-config", run_config, "--stream"]
        print("$", " ".join(command[1:]))
        started = time.perf_counter()
        subprocess.run(command, env=env, check=True, timeout=args.timeout)
        if not final_model.exists():
            raise SystemExit(f"the run wrote no model; logs in {root}")
        net = Net()
        net.load_state_dict(torch.load(final_model))
        accuracy = test(net, load_centralized_dataset(), torch.device("cpu"))[1]
        seconds = time.perf_counter() - started
        print(f"\nfinal accuracy on the held-out digits: {accuracy:.3f} ({seconds:.0f} s run)")
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        federation.stop()
        if args.keep:
            print(f"work folder and logs: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

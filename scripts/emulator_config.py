"""Choose the emulator suite's ports for one run of scripts/with-emulators; print them as shell variables.

The ports are read from firebase.json (the one place they are written). When every one
of them is free, that file is used as it is. Otherwise each emulator gets a free port
from the system, and a copy of firebase.json with those ports is written for this run
(its hosting folder too, so this run's dashboard talks to this run's emulators).
`TALLY_RULES=path` makes the run's copy load that rules file instead of firestore.rules;
`TALLY_FREE_PORTS=1` takes free ports even when firebase.json's are free (for suites that
start at the same moment, which would otherwise both find those free).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from tally_dev.ports import free_port, in_use

EMULATORS = ("auth", "firestore", "functions", "hosting", "hub", "logging")
HOSTS_FILE = "emulators.json"


def ports_of(config: dict[str, Any]) -> dict[str, int]:
    """Return every port the suite listens on, by name."""
    emulators = config["emulators"]
    ports = {name: int(emulators[name]["port"]) for name in EMULATORS}
    ports["websocket"] = int(emulators["firestore"]["websocketPort"])
    return ports


def main(argv: list[str] | None = None) -> int:
    """Print shell assignments: CONFIG_FILE, PUBLIC_DIR and one *_PORT per emulator."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("root", type=Path, help="the project folder (holds firebase.json)")
    parser.add_argument("run", help="a name for this run (unique among the runs under way)")
    args = parser.parse_args(argv)
    config = json.loads((args.root / "firebase.json").read_text())
    host = config["emulators"]["auth"].get("host", "127.0.0.1")
    ports = ports_of(config)
    public = config["hosting"]["public"]
    config_file = "firebase.json"
    rules = os.environ.get("TALLY_RULES")  # another rules file, e.g. an app's merged rules (make rules-test)
    if rules:
        if not Path(rules).is_file():
            parser.error(f"TALLY_RULES: no such file: {rules}")
        config["firestore"]["rules"] = str(Path(rules).resolve())
    # TALLY_FREE_PORTS=1: free ports even when firebase.json's are free (suites started together).
    taken = bool(os.environ.get("TALLY_FREE_PORTS")) or any(in_use(host, port) for port in ports.values())
    if taken:
        chosen: set[int] = set()
        for name in ports:
            while (port := free_port(host)) in chosen:
                pass
            chosen.add(port)
            ports[name] = port
        emulators = config["emulators"]
        for name in EMULATORS:
            emulators[name]["port"] = ports[name]
        emulators["firestore"]["websocketPort"] = ports["websocket"]
        run_public = args.root / ".emulators" / args.run / "public"
        run_public.mkdir(parents=True, exist_ok=True)
        for entry in (args.root / public).iterdir():
            link = run_public / entry.name
            if entry.name != HOSTS_FILE and not link.exists():
                link.symlink_to(entry.resolve())
        public = str(run_public.relative_to(args.root))
        config["hosting"]["public"] = public
    if taken or rules:
        config_file = f"firebase.{args.run}.json"  # beside firebase.json: paths in it stay relative
        (args.root / config_file).write_text(json.dumps(config, indent=2))
    # This run's dashboard reads where its emulators are (hosting serves the file).
    hosts = {name: f"{host}:{ports[name]}" for name in ("auth", "functions", "firestore")}
    hosts_file = args.root / public / HOSTS_FILE
    hosts_file.unlink(missing_ok=True)
    hosts_file.write_text(json.dumps(hosts) + "\n")
    assignments = {
        "CONFIG_FILE": config_file,
        "PUBLIC_DIR": public,
        "HOST": host,
        "WEBHOOK_PORT": str(free_port(host)),
    }
    assignments.update({f"{name.upper()}_PORT": str(port) for name, port in ports.items()})
    sys.stdout.write("".join(f"{key}={shlex.quote(value)}\n" for key, value in assignments.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

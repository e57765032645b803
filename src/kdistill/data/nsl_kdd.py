"""NSL-KDD network-intrusion records (Tavallaee et al. 2009): tabular anomaly detection.

Each row is one connection: 41 features (3 categorical: protocol, service, flag; 38 numeric, many
heavy-tailed byte and connection counts), its label (`normal` or an attack name) and a difficulty
score (how many of 21 classifiers got it wrong), which is not a feature and is dropped. The test
file holds 17 attack names the training file never has (e.g. `mscan`, `apache2`, `snmpguess`):
models must generalise to attacks they were not shown, which is why test accuracy here sits well
below the training split's (typically 75-85 % for binary detection).

Tasks (`data.options.task`):
- `binary` (the default): `normal` against `attack`, intrusion detection as anomaly detection;
- `category`: normal and the four attack families of the KDD'99 taxonomy (dos, probe, r2l, u2r),
  every attack name of either file mapped by `ATTACK_FAMILY`; an unknown name is refused with its line.

Encoding (`kdistill.data.tabular`): log(1 + x) of the 16 count and byte columns that span orders of
magnitude (`LOG1P`), one-hot protocol / service / flag with the training file's categories, and the
training split's per-feature statistics for the models' standardisation: 118 features with the 20 %
training file (its 66 services), 122 with the full one.
"""

from __future__ import annotations

from pathlib import Path

from kdistill.data.base import DataBundle
from kdistill.data.tabular import read_table, table_bundle
from kdistill.errors import BadInput
from kdistill.file_checks import MissingFile

TRAIN_FILES = ("KDDTrain+.txt.gz", "KDDTrain+.txt", "KDDTrain+_20Percent.txt.gz", "KDDTrain+_20Percent.txt")
TEST_FILES = ("KDDTest+.txt.gz", "KDDTest+.txt")
COLUMNS = [
    "duration", "protocol_type", "service", "flag", "src_bytes", "dst_bytes", "land", "wrong_fragment", "urgent",
    "hot", "num_failed_logins", "logged_in", "num_compromised", "root_shell", "su_attempted", "num_root",
    "num_file_creations", "num_shells", "num_access_files", "num_outbound_cmds", "is_host_login", "is_guest_login",
    "count", "srv_count", "serror_rate", "srv_serror_rate", "rerror_rate", "srv_rerror_rate", "same_srv_rate",
    "diff_srv_rate", "srv_diff_host_rate", "dst_host_count", "dst_host_srv_count", "dst_host_same_srv_rate",
    "dst_host_diff_srv_rate", "dst_host_same_src_port_rate", "dst_host_srv_diff_host_rate", "dst_host_serror_rate",
    "dst_host_srv_serror_rate", "dst_host_rerror_rate", "dst_host_srv_rerror_rate", "label", "difficulty",
]
CATEGORICAL = ("protocol_type", "service", "flag")
LOG1P = ("duration", "src_bytes", "dst_bytes", "wrong_fragment", "urgent", "hot", "num_failed_logins",
         "num_compromised", "num_root", "num_file_creations", "num_shells", "num_access_files", "count",
         "srv_count", "dst_host_count", "dst_host_srv_count")
FAMILIES = {
    "dos": ("apache2", "back", "land", "mailbomb", "neptune", "pod", "processtable", "smurf", "teardrop", "udpstorm"),
    "probe": ("ipsweep", "mscan", "nmap", "portsweep", "saint", "satan"),
    "r2l": ("ftp_write", "guess_passwd", "imap", "multihop", "named", "phf", "sendmail", "snmpgetattack",
            "snmpguess", "spy", "warezclient", "warezmaster", "worm", "xlock", "xsnoop"),
    "u2r": ("buffer_overflow", "httptunnel", "loadmodule", "perl", "ps", "rootkit", "sqlattack", "xterm"),
}
ATTACK_FAMILY = {name: family for family, names in FAMILIES.items() for name in names}
TASKS = ("binary", "category")


def _binary(label: str) -> str | None:
    return "normal" if label == "normal" else ("attack" if label in ATTACK_FAMILY else None)


def _family(label: str) -> str | None:
    return "normal" if label == "normal" else ATTACK_FAMILY.get(label)


def _find(root: Path, names: tuple[str, ...]) -> Path:
    for name in names:
        if (root / name).exists():
            return root / name
    raise MissingFile(root / names[0], f"NSL-KDD file missing; data.root must hold one of {', '.join(names)}")


def load_nsl_kdd_bundle(root: str | Path, task: str = "binary") -> DataBundle:
    """`data: {name: nsl-kdd, root: .../nsl-kdd, options: {task: binary | category}}`; the full
    training file (KDDTrain+) is used where present, else its 20 % subset."""
    if task not in TASKS:
        raise BadInput(f"data.options.task: '{task}' is not one of {', '.join(TASKS)}")
    root = Path(root)
    if not root.is_dir():
        raise MissingFile(root, "folder not found; data.root must be the folder holding the NSL-KDD files")
    train, test = (read_table(_find(root, names), COLUMNS) for names in (TRAIN_FILES, TEST_FILES))
    binary = task == "binary"
    return table_bundle(f"nsl-kdd-{task}", train, test, label="label", categorical=CATEGORICAL, log1p=LOG1P,
                        drop=("difficulty",), label_map=_binary if binary else _family,
                        classes=["normal", "attack"] if binary else ["normal", *FAMILIES])


__all__ = ["ATTACK_FAMILY", "COLUMNS", "load_nsl_kdd_bundle"]

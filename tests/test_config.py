"""The dataset config: defaults, validation, every error naming the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import assert_clean_stderr, invoke

from volsegsync.config import (
    DEFAULT_CONFIG_TEXT,
    Config,
    NamingConfig,
    RolesConfig,
    load_config,
)
from volsegsync.dataset import Dataset
from volsegsync.errors import ConfigError


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_default_text_parses_to_the_defaults(tmp_path: Path) -> None:
    assert load_config(write_config(tmp_path, DEFAULT_CONFIG_TEXT)) == Config()


def test_missing_file_gives_defaults(tmp_path: Path) -> None:
    assert load_config(tmp_path / "nope.toml") == Config()


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_config(write_config(tmp_path, "")) == Config()


def test_custom_values_are_read(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        """
[naming]
separator = "_"
fields = ["subject", "date"]
version = "rev(?P<n>[0-9]+)"
[naming.patterns]
subject = "sub[0-9]+"
[naming.dates]
date = "%Y%m%d"
[roles]
volume_dirs = ["imagesTr"]
segmentation_dirs = ["labelsTr"]
volume_suffix = "_0000"
[pairing]
by = "metadata"
reference_keys = ["ref"]
[verify]
position_tolerance = 0.5
[verify.labels]
0 = "background"
1 = "vertebra"
[verify.severity]
version_gap = "off"
[scan]
exclude = ["scratch/*"]
""",
    )
    config = load_config(path)
    assert config.naming == NamingConfig(
        separator="_",
        fields=("subject", "date"),
        patterns={"subject": "sub[0-9]+", "date": ".+"},
        dates={"date": "%Y%m%d"},
        version="rev(?P<n>[0-9]+)",
    )
    assert config.roles == RolesConfig(
        volume_dirs=("imagesTr",), segmentation_dirs=("labelsTr",), volume_suffix="_0000"
    )
    assert config.pairing.by == "metadata"
    assert config.pairing.reference_keys == ("ref",)
    assert config.verify.position_tolerance == 0.5
    assert config.verify.direction_tolerance == 1e-4
    assert dict(config.verify.labels) == {0: "background", 1: "vertebra"}
    assert dict(config.verify.severity) == {"version_gap": "off"}
    assert config.exclude == ("scratch/*",)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("colour = 1\n", "[colour] unknown key"),
        ("[naming]\nspelling = 1\n", "[naming.spelling] unknown key"),
        ("[roles]\nvolume_folders = []\n", "[roles.volume_folders] unknown key"),
        ("[scan]\ninclude = []\n", "[scan.include] unknown key"),
        ("[naming.patterns]\nnickname = 'x'\n", "[naming.patterns.nickname] unknown key"),
        ("[naming]\nversion = '(unclosed'\n", "[naming.version] invalid regular expression"),
        ("[naming.patterns]\nprefix = '[a-'\n", "[naming.patterns.prefix] invalid regular"),
        ("[naming]\nversion = 'v[0-9]+'\n", "[naming.version] must contain a group (?P<n>"),
        ("[naming]\nseparator = ''\n", "[naming.separator] must be a non-empty string"),
        ("[naming]\nseparator = '/'\n", "[naming.separator] must be a non-empty string"),
        ("[naming]\nfields = ['a', 'a']\n", "[naming.fields] must be a non-empty list of dist"),
        ("[naming]\nfields = 'prefix'\n", "[naming.fields] must be a list of strings"),
        ("[roles]\nvolume_extensions = ['nii']\n", "[roles.volume_extensions] extensions st"),
        (
            "[roles]\nvolume_dirs = ['x']\nsegmentation_dirs = ['x']\n",
            "[roles.volume_dirs] a folder cannot hold both",
        ),
        ("[pairing]\nby = 'magic'\n", "[pairing.by] must be 'naming' or 'metadata'"),
        ("[verify]\nposition_tolerance = -1\n", "[verify.position_tolerance] must be a non-neg"),
        ("[verify]\nposition_tolerance = true\n", "[verify.position_tolerance] must be a non-n"),
        ("[verify.labels]\none = 'x'\n", "[verify.labels.one] label values must be integers"),
        ("[verify.severity]\nversion_gap = 'loud'\n", "[verify.severity.version_gap] must be"),
        ("naming = 3\n", "[naming] must be a table"),
        # issue 7.8: each a one-line error naming the key
        ("[verify.severity]\nversion_gapp = 'off'\n", "[verify.severity.version_gapp] unknown pro"),
        ("[naming.dates]\npostfix = 'D%Q'\n", "[naming.dates.postfix] invalid date format 'D%Q'"),
        ("[naming.dates]\npostfix = 'D%'\n", "[naming.dates.postfix] invalid date format 'D%'"),
        ("[naming.dates]\npostfix = '%'\n", "a lone '%' at the end"),
        # strptime raises re.error, not ValueError, for a directive given twice
        ("[naming.dates]\npostfix = 'D%d%d'\n", "invalid date format 'D%d%d': redefinition"),
        ("[verify]\nposition_tolerance = nan\n", "[verify.position_tolerance] must be a non-neg"),
        ("[verify]\ndirection_tolerance = inf\n", "[verify.direction_tolerance] must be a non-n"),
        ("[naming]\nversion = 'v(?P<n>[0-9]+)?'\n", "[naming.version] the group (?P<n>...) must"),
        ("[naming]\nversion = 'v(?P<n>[0-9]*)|x'\n", "[naming.version] the group (?P<n>...) must"),
        ("[naming]\nversion = '(v(?P<n>[0-9]+))*'\n", "[naming.version] the group (?P<n>...) must"),
        ("[naming]\nversion = 'v(?P<n>[0-9]+)(?=x)'\n", "[naming.version] regular expression"),
        ("[naming.patterns]\nprefix = '(a)\\1'\n", "offers no backreferences or lookarounds"),
        ("[limits]\nmax_image_bytes = 0\n", "[limits.max_image_bytes] must be a positive"),
        ("[limits]\nmax_image_bytes = '4G'\n", "[limits.max_image_bytes] must be a positive"),
    ],
)
def test_invalid_values_name_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ")
    assert expected in message


def test_malformed_toml_names_the_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, "[naming\nseparator = '-'\n")
    with pytest.raises(ConfigError, match=r"invalid TOML") as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: invalid TOML: ")


def test_non_utf8_config(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b"[naming]\nseparator = '\xff'\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"{path}: not valid UTF-8"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[naming\n", "invalid TOML"),
        ("[roles]\ncolour = 'red'\n", "[roles.colour] unknown key"),
        ("[naming.patterns]\nprefix = '(['\n", "[naming.patterns.prefix] invalid regular"),
    ],
)
@pytest.mark.parametrize("command", ["pair", "status", "check-names"])
def test_bad_config_via_cli_exits_2(ds_root: Path, text: str, expected: str, command: str) -> None:
    config = ds_root / ".volsegsync" / "config.toml"
    config.write_text(text, encoding="utf-8")
    result = invoke(["-C", str(ds_root), command])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert f"volsegsync: error: {config}: " in result.stderr
    assert expected in result.stderr
    assert_clean_stderr(result.stderr)
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_custom_convention_in_config_changes_checks_without_code(ds_root: Path) -> None:
    """Another separator, field patterns, a date format and a version pattern."""
    (ds_root / ".volsegsync" / "config.toml").write_text(
        """
[naming]
separator = "_"
fields = ["subject", "session", "date"]
version = "rev(?P<n>[0-9]+)"
[naming.patterns]
subject = "sub[0-9]{2}"
session = "ses[0-9]{2}"
date = "[0-9]{8}"
[naming.dates]
date = "%Y%m%d"
""",
        encoding="utf-8",
    )
    ds = Dataset.open(ds_root)
    conv = ds.convention
    assert conv.check("sub01_ses02_20200131.nii.gz") == []
    assert conv.check("sub01_ses02_20200131_rev3.nrrd") == []
    info = conv.parse("sub01_ses02_20200131_rev3.nrrd")
    assert info is not None
    assert (info.key, info.version) == ("sub01_ses02_20200131", 3)
    # the default convention's name is wrong here
    [p] = conv.check("C01-LowerBack_FSE_T2w_V001-D22061998.nii.gz")
    assert p.details == {"field": "fields", "expected": 3, "found": 4}  # split on "_"
    [p] = conv.check("sub01_ses02_20200231.nii.gz")
    assert p.details == {"field": "date", "expected": "a real date as %Y%m%d", "found": "20200231"}
    [p] = conv.check("subA_ses02_20200131.nii.gz")
    assert p.details == {"field": "subject", "expected": "pattern sub[0-9]{2}", "found": "subA"}
    # a version of the default style is not a version here: it is one field too many
    [p] = conv.check("sub01_ses02_20200131_v3.nrrd")
    assert p.details == {"field": "fields", "expected": 3, "found": 4}


def test_config_without_dates_table_keeps_the_default_date_check(tmp_path: Path) -> None:
    """A trimmed config must not silently drop the real-date check of the postfix."""
    config = load_config(write_config(tmp_path, "[naming]\nseparator = '-'\n"))
    assert dict(config.naming.dates) == {"postfix": "D%d%m%Y"}
    renamed = load_config(write_config(tmp_path, "[naming]\nfields = ['a', 'b']\n"))
    assert dict(renamed.naming.dates) == {}
    off = load_config(write_config(tmp_path, "[naming.dates]\n"))
    assert dict(off.naming.dates) == {}


def test_re2_named_version_group_and_large_limit_are_accepted(tmp_path: Path) -> None:
    text = "[naming]\nversion = 'rev(?P<n>[0-9]{1,4})'\n[limits]\nmax_image_bytes = 17179869184\n"
    config = load_config(write_config(tmp_path, text))
    assert config.naming.version == "rev(?P<n>[0-9]{1,4})"
    assert config.limits.max_image_bytes == 16 * 1024**3


def test_numeric_date_formats_known_to_read_back_do_read_back() -> None:
    """The shortcut that spares loading strptime: every format of the numeric
    directives, each once, between literal text (digits, spaces, '%%'), reads back."""
    import itertools
    import random
    from datetime import datetime

    from volsegsync.config import _NUMERIC_DIRECTIVES, _date_format_problem

    rng = random.Random(7)
    literals = ["", "D", "-", "0", "1", "5", " ", "%%", "x9", "_"]
    checked = 0
    for k in (1, 2, 3):
        for combo in itertools.permutations(sorted(_NUMERIC_DIRECTIVES), k):
            fmt = rng.choice(literals) + "".join(f"%{d}{rng.choice(literals)}" for d in combo)
            sample = datetime(2000, 1, 31).strftime(fmt)
            datetime.strptime(sample, fmt)  # raises if the shortcut's claim is wrong
            assert _date_format_problem(fmt) is None, fmt
            checked += 1
    assert checked == 9 + 9 * 8 + 9 * 8 * 7
    assert _date_format_problem("D%d%d") is not None  # twice: strptime is asked, and refuses


def test_config_memo_spares_the_parser_and_never_hides_a_change(ds_root: Path) -> None:
    """A second run with the same config files loads no TOML parser; an edit (to a
    pattern RE2 refuses, a date format strptime refuses) is checked in full."""
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from volsegsync.dataset import Dataset\n"
        f"ds = Dataset.open({str(ds_root)!r})\n"
        "print(ds.config.naming.separator, 'tomllib' in sys.modules)\n"
    )

    def opened() -> str:
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert opened() == "- True"  # parsed, and memoised
    assert (ds_root / ".volsegsync" / "state" / "config.marshal").is_file()
    assert opened() == "- False"  # the same bytes: the memo's tables
    config = ds_root / ".volsegsync" / "config.toml"
    good = config.read_text()
    config.write_text(good.replace('prefix = "[A-Za-z0-9]+"', 'prefix = "(a)\\\\1"'))
    result = invoke(["-C", str(ds_root), "status"])
    assert result.exit_code == 2
    assert "offers no backreferences or lookarounds" in result.stderr
    config.write_text(good.replace('postfix = "D%d%m%Y"', 'postfix = "D%d%d%Y"'))
    result = invoke(["-C", str(ds_root), "status"])
    assert result.exit_code == 2
    assert "invalid date format 'D%d%d%Y'" in result.stderr
    config.write_text(good)
    assert opened() == "- False"  # the good config's memo is still there


def test_config_memo_of_another_state_folder_is_ignored(ds_root: Path) -> None:
    """A memo committed to git or copied from elsewhere cannot stand for the config."""
    import marshal

    import xxhash

    from volsegsync import __version__

    config = (ds_root / ".volsegsync" / "config.toml").read_bytes()
    key = [__version__, xxhash.xxh3_128_hexdigest(config), ""]
    lie = {"naming": {"separator": "_", "patterns": {"prefix": "(a+)+$"}}}
    memo = ds_root / ".volsegsync" / "state" / "config.marshal"
    memo.parent.mkdir(exist_ok=True)
    memo.write_bytes(marshal.dumps({"owner": "0:0:0", "data": {"key": key, "tables": [lie, {}]}}))
    assert Dataset.open(ds_root).config.naming.separator == "-"


def test_memo_keys_name_the_config_bytes_the_run_parsed(ds_root: Path) -> None:
    """A config edited while a run goes on does not lend its digest to memos of results
    computed under the config the run read at its start."""
    import xxhash

    config = ds_root / ".volsegsync" / "config.toml"
    before = config.read_bytes()
    ds = Dataset.open(ds_root)
    config.write_bytes(before.replace(b'by = "naming"', b'by = "metadata"'))
    assert config.read_bytes() != before
    assert ds.state_key("x").endswith(xxhash.xxh3_128_hexdigest(before))
    assert (
        Dataset.open(ds_root)
        .state_key("x")
        .endswith(xxhash.xxh3_128_hexdigest(config.read_bytes()))
    )

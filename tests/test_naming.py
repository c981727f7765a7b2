"""The naming convention: roles, pairing keys, versions and every way a name can break it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import NAME1, NAME2, assert_clean_stderr, invoke, run_script, write_pair

from volsegsync.config import NamingConfig, RolesConfig
from volsegsync.naming import SEGMENTATION, VOLUME, Convention, NameInfo, bad_name_reason

DEFAULT = Convention(NamingConfig(), RolesConfig())
GOOD = "C01-LowerBack_FSE_T2w_V001-D22061998"


# --------------------------------------------------------------------------- default convention


def test_default_accepts_the_reference_name() -> None:
    assert DEFAULT.check(f"{GOOD}.nii.gz") == []
    assert DEFAULT.check(f"sub/dir/{GOOD}.nii") == []
    assert DEFAULT.check(f"{GOOD}.nrrd") == []
    assert DEFAULT.check(f"{GOOD}-v4.nrrd") == []
    assert DEFAULT.check(f"{GOOD}-v12.seg.nrrd") == []


def test_parse_volume_and_versioned_segmentations() -> None:
    assert DEFAULT.parse(f"vols/{GOOD}.nii.gz") == NameInfo(
        f"vols/{GOOD}.nii.gz", VOLUME, ".nii.gz", GOOD, None
    )
    assert DEFAULT.parse(f"{GOOD}-v4.nrrd") == NameInfo(
        f"{GOOD}-v4.nrrd", SEGMENTATION, ".nrrd", GOOD, 4
    )
    assert DEFAULT.parse(f"{GOOD}-v2.seg.nrrd") == NameInfo(
        f"{GOOD}-v2.seg.nrrd", SEGMENTATION, ".seg.nrrd", GOOD, 2
    )
    assert DEFAULT.parse(f"{GOOD}.nrrd") == NameInfo(
        f"{GOOD}.nrrd", SEGMENTATION, ".nrrd", GOOD, None
    )
    # a lone version-looking name is not a version
    assert DEFAULT.parse("v3.nrrd") == NameInfo("v3.nrrd", SEGMENTATION, ".nrrd", "v3", None)
    assert DEFAULT.parse("notes.txt") is None
    assert DEFAULT.parse(".nii.gz") is None


def test_wrong_field_count() -> None:
    [p] = DEFAULT.check("C01-LowerBack-T2w-D22061998.nii.gz")
    assert p.category == "naming"
    assert p.severity == "error"
    assert p.files == ("C01-LowerBack-T2w-D22061998.nii.gz",)
    assert p.details == {"field": "fields", "expected": 3, "found": 4}
    assert "expected 3 fields PREFIX-BASENAME-POSTFIX separated by '-', found 4" in p.message
    [p] = DEFAULT.check("C01_LowerBack.nii.gz")
    assert p.details == {"field": "fields", "expected": 3, "found": 1}


def test_bad_prefix_characters() -> None:
    [p] = DEFAULT.check("C_01-LowerBack_FSE-D22061998.nii.gz")
    assert p.details == {"field": "prefix", "expected": "pattern [A-Za-z0-9]+", "found": "C_01"}
    assert p.message == (
        "C_01-LowerBack_FSE-D22061998.nii.gz: prefix: expected pattern [A-Za-z0-9]+, found 'C_01'"
    )


def test_postfix_that_is_no_real_date() -> None:
    name = "C04-Knee_PD_V002-D31022001.nii.gz"
    [p] = DEFAULT.check(name)
    assert p.details == {
        "field": "postfix",
        "expected": "a real date as D%d%m%Y",
        "found": "D31022001",
    }
    assert p.files == (name,)


def test_postfix_that_breaks_the_pattern() -> None:
    [p] = DEFAULT.check("C01-Back-2206199.nii.gz")
    assert p.details == {"field": "postfix", "expected": "pattern D[0-9]{8}", "found": "2206199"}


def test_several_bad_fields_are_all_reported() -> None:
    problems = DEFAULT.check("C.1-Back!-D99999999.nrrd")
    assert [p.details["field"] for p in problems] == ["prefix", "basename", "postfix"]
    assert [p.details["found"] for p in problems] == ["C.1", "Back!", "D99999999"]


def test_version_on_a_volume() -> None:
    [p] = DEFAULT.check(f"{GOOD}-v2.nii.gz")
    assert p.details == {"field": "version", "expected": "no version on a volume", "found": "v2"}


def test_bad_version_on_a_segmentation_is_an_extra_field() -> None:
    [p] = DEFAULT.check(f"{GOOD}-version2.nrrd")
    assert p.details == {"field": "fields", "expected": 3, "found": 4}


def test_unstorable_names() -> None:
    assert bad_name_reason("a\tb.nii.gz") == "the name holds a control character (tab, newline...)"
    assert bad_name_reason("a\nb.nii.gz") is not None
    bad = os.fsdecode(b"C01-Bad\xff-D22061998.nii.gz")
    assert bad_name_reason(bad) == "the name is not valid UTF-8"
    [p] = DEFAULT.check(bad)
    assert p.category == "unreadable"
    assert p.details == {"reason": "the name is not valid UTF-8"}
    assert bad_name_reason("C01-Ü-D22061998.nii.gz") is None


# --------------------------------------------------------------------------- roles


def test_role_by_extension() -> None:
    assert DEFAULT.role_of(f"{GOOD}.nii.gz") == (VOLUME, "")
    assert DEFAULT.role_of(f"{GOOD}.nii") == (VOLUME, "")
    assert DEFAULT.role_of(f"{GOOD}.nrrd") == (SEGMENTATION, "")
    assert DEFAULT.role_of(f"{GOOD}.seg.nrrd") == (SEGMENTATION, "")
    assert DEFAULT.role_of(f"{GOOD}.mha") == (None, "not a volume or segmentation extension")
    assert DEFAULT.is_candidate("a/b/x.seg.nrrd")
    assert not DEFAULT.is_candidate("a/b/x.txt")


NNUNET = Convention(
    NamingConfig(fields=("case",), patterns={"case": r"case[0-9]{3}"}, dates={}),
    RolesConfig(
        volume_extensions=(".nii.gz",),
        segmentation_extensions=(".nii.gz",),
        volume_dirs=("imagesTr",),
        segmentation_dirs=("labelsTr",),
        volume_suffix="_0000",
    ),
)


def test_role_by_folder_nnunet() -> None:
    vol = NNUNET.parse("Task01/imagesTr/case001_0000.nii.gz")
    seg = NNUNET.parse("Task01/labelsTr/case001.nii.gz")
    assert vol == NameInfo(
        "Task01/imagesTr/case001_0000.nii.gz", VOLUME, ".nii.gz", "case001", None
    )
    assert seg == NameInfo(
        "Task01/labelsTr/case001.nii.gz", SEGMENTATION, ".nii.gz", "case001", None
    )
    assert NNUNET.check("Task01/imagesTr/case001_0000.nii.gz") == []
    assert NNUNET.check("Task01/labelsTr/case001.nii.gz") == []


def test_ambiguous_role_message() -> None:
    role, why = NNUNET.role_of("elsewhere/case001.nii.gz")
    assert role is None
    assert why == (
        "extension .nii.gz is used by volumes and segmentations alike, and no folder "
        "or suffix rule of the config decides which this is"
    )
    assert NNUNET.parse("elsewhere/case001.nii.gz") is None
    [p] = NNUNET.check("elsewhere/case001.nii.gz")
    assert p.category == "naming"
    assert p.details == {"field": "role"}
    assert p.message == f"elsewhere/case001.nii.gz: {why}"


def test_role_by_suffix() -> None:
    conv = Convention(
        NamingConfig(),
        RolesConfig(
            volume_extensions=(".nii.gz",),
            segmentation_extensions=(".nii.gz",),
            volume_suffix="_img",
            segmentation_suffix="_seg",
        ),
    )
    vol = conv.parse(f"{GOOD}_img.nii.gz")
    seg = conv.parse(f"{GOOD}-v3_seg.nii.gz")
    assert vol == NameInfo(f"{GOOD}_img.nii.gz", VOLUME, ".nii.gz", GOOD, None)
    assert seg == NameInfo(f"{GOOD}-v3_seg.nii.gz", SEGMENTATION, ".nii.gz", GOOD, 3)
    assert conv.check(f"{GOOD}_img.nii.gz") == []
    assert conv.check(f"{GOOD}-v3_seg.nii.gz") == []
    assert conv.role_of(f"{GOOD}.nii.gz")[0] is None


# --------------------------------------------------------------------------- check-names CLI


def test_check_names_clean_dataset_exits_0(ds_root: Path) -> None:
    write_pair(ds_root, NAME1, versions=(1, 2))
    result = invoke(["-C", str(ds_root), "check-names"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "3 files checked, 0 with naming problems\n"


def test_check_names_reports_reason_and_exits_1(ds_root: Path) -> None:
    write_pair(ds_root, NAME1)
    write_pair(ds_root, "C04-Knee_PD_V002-D31022001")
    result = invoke(["-C", str(ds_root), "check-names"])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines == [
        "error: [naming] C04-Knee_PD_V002-D31022001-v1.nrrd: postfix: expected a real date as "
        "D%d%m%Y, found 'D31022001'",
        "error: [naming] C04-Knee_PD_V002-D31022001.nii.gz: postfix: expected a real date as "
        "D%d%m%Y, found 'D31022001'",
        "4 files checked, 2 with naming problems",
    ]


def test_check_names_json(ds_root: Path) -> None:
    write_pair(ds_root, "C01-Back-D22061998", versions=(1,))
    (ds_root / "C01-Back-D22061998-v1.nii.gz").write_bytes(b"x")
    result = invoke(["-C", str(ds_root), "check-names", "--format", "json"])
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["schema"] == "volsegsync.check-names/1"
    assert doc["checked"] == 3
    assert doc["summary"] == {"errors": 1, "warnings": 0, "infos": 0}
    [p] = doc["problems"]
    assert p["category"] == "naming"
    assert p["files"] == ["C01-Back-D22061998-v1.nii.gz"]
    assert p["details"] == {"field": "version", "expected": "no version on a volume", "found": "v1"}


def test_check_names_from_stdin(ds_root: Path) -> None:
    text = f"{GOOD}.nii.gz\nC_01-Back-D22061998.nii.gz\n\n{NAME2}-v1.nrrd\n"
    result = invoke(["-C", str(ds_root), "check-names", "-"], input=text)
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "error: [naming] C_01-Back-D22061998.nii.gz: prefix: expected pattern [A-Za-z0-9]+, "
        "found 'C_01'",
        "3 files checked, 1 with naming problems",
    ]


def test_check_names_from_stdin_nul_separated(ds_root: Path) -> None:
    data = f"{GOOD}.nii.gz\0{NAME2}-v1.nrrd\0".encode()
    result = invoke(["-C", str(ds_root), "check-names", "-"], input=data)
    assert result.exit_code == 0, result.output
    assert result.stdout == "2 files checked, 0 with naming problems\n"


def test_check_names_arguments_and_outside_path(ds_root: Path, tmp_path: Path) -> None:
    result = invoke(
        ["-C", str(ds_root), "check-names", f"{GOOD}.nii.gz", str(tmp_path / "x.nii.gz")]
    )
    assert result.exit_code == 1
    assert f"{tmp_path / 'x.nii.gz'}: outside the dataset at {ds_root}" in result.stdout
    assert result.stdout.endswith("2 files checked, 1 with naming problems\n")


def test_check_names_outside_a_dataset_uses_the_default(tmp_path: Path) -> None:
    result = invoke(["-C", str(tmp_path), "check-names", f"{GOOD}.nii.gz", "bad.nii.gz"])
    assert result.exit_code == 1
    assert "error: [naming] bad.nii.gz: expected 3 fields" in result.stdout


def test_check_names_stdin_subprocess(ds_root: Path) -> None:
    proc = run_script(
        ["check-names", "-"],
        cwd=ds_root,
        input=b"C01-Back-D31022001.nii.gz\nC01-Back-D30012001.nii.gz\n",
    )
    assert proc.returncode == 1
    assert proc.stdout.decode().splitlines()[-1] == "2 files checked, 1 with naming problems"
    assert b"found 'D31022001'" in proc.stdout
    assert_clean_stderr(proc.stderr)


@pytest.mark.parametrize("flag", ["-q", "--quiet"])
def test_check_names_quiet(ds_root: Path, flag: str) -> None:
    write_pair(ds_root, "C01-Back-D31022001")
    result = invoke(["-C", str(ds_root), "check-names", flag])
    assert result.exit_code == 1
    assert result.output == ""


def test_check_names_stdin_with_a_non_utf8_name(ds_root: Path) -> None:
    proc = run_script(
        ["check-names", "-", "--format", "json"],
        cwd=ds_root,
        input=b"C01-Bad\xff-D01012000.nii.gz\n" + f"{GOOD}.nii.gz\n".encode(),
    )
    assert proc.returncode == 1
    assert_clean_stderr(proc.stderr)
    doc = json.loads(proc.stdout)
    assert doc["checked"] == 2
    [p] = doc["problems"]
    assert p["category"] == "unreadable"
    assert p["files"] == [os.fsdecode(b"C01-Bad\xff-D01012000.nii.gz")]
    assert p["details"] == {"reason": "the name is not valid UTF-8"}

"""Multi-channel cases: several co-registered volumes, one segmentation.

nnU-Net names the channels of a case ``CASE_0000``, ``CASE_0001``, ... (e.g.
BraTS: T1, T1ce, T2, FLAIR). With ``[channels] required`` set in the config,
:func:`group_channels` runs before pairing: volumes whose pairing key ends with
the channel suffix are grouped per case, pairing sees one volume per case (its
lowest channel, under the case key) and the index records every channel as a
``volume:CHANNEL`` line. A case is complete when every required channel is
present; a missing or an undeclared channel is a ``channels`` problem, and so is
a channel on another voxel grid than the case's first (:func:`grid_problems`).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from volsegsync.problems import Problem, make_problem

if TYPE_CHECKING:  # naming and config import this module's config type
    from volsegsync.config import _Reader
    from volsegsync.headers import Geometry
    from volsegsync.naming import NameInfo

DEFAULT_SUFFIX = r"_(?P<channel>[0-9]{4})"


class ChannelConfig(NamedTuple):
    """``[channels]`` of the config: off (no ``required``) by default."""

    suffix: str = DEFAULT_SUFFIX  # end of a volume's pairing key naming its channel
    required: tuple[str, ...] = ()  # every case must have these channels (e.g. "0000")


def parse_channels(r: _Reader) -> ChannelConfig:
    """The ``[channels]`` table, validated (called by :func:`volsegsync.config.parse_config`)."""
    r.check_keys({"suffix", "required"})
    suffix = r.regex("suffix", r.string("suffix", DEFAULT_SUFFIX))
    if "(?P<channel>" not in suffix:
        raise r.fail("suffix", "must contain a group (?P<channel>...) holding the channel id")
    required = r.strings("required", ())
    if len(set(required)) != len(required) or not all(c.isdigit() for c in required):
        raise r.fail("required", "must list distinct channel ids made of digits, e.g. '0000'")
    return ChannelConfig(suffix, tuple(sorted(required, key=lambda c: (int(c), c))))


class ChannelGroups(NamedTuple):
    infos: list[NameInfo]  # what pairing sees: one volume per multi-channel case
    channels: dict[str, dict[str, str]]  # representative volume path -> channel -> path
    problems: list[Problem]


def group_channels(infos: Iterable[NameInfo], config: ChannelConfig) -> ChannelGroups:
    """Group channel volumes per case (a no-op unless ``config.required`` is set)."""
    infos = list(infos)
    if not config.required:
        return ChannelGroups(infos, {}, [])
    pattern = re.compile(f"(?P<case>.+?)(?:{config.suffix})$")
    cases: dict[str, dict[str, NameInfo]] = defaultdict(dict)
    out: list[NameInfo] = []
    problems: list[Problem] = []
    for info in infos:
        m = pattern.fullmatch(info.key) if info.role == "volume" else None
        if m is None:
            out.append(info)
            continue
        case, channel = m.group("case"), m.group("channel")
        if channel in cases[case]:  # two files claim one channel: both stay out
            other = cases[case][channel]
            paths = sorted([other.path, info.path])
            problems.append(
                make_problem(
                    "ambiguous",
                    paths,
                    f"{len(paths)} volumes claim channel {channel} of case {case}: "
                    f"{', '.join(paths)}",
                    {"case": case, "channel": channel},
                )
            )
            continue
        cases[case][channel] = info
    channels: dict[str, dict[str, str]] = {}
    required = set(config.required)
    for case, found in sorted(cases.items()):
        present = sorted(found, key=lambda c: (int(c), c))
        first = found[present[0]]
        out.append(first._replace(key=case))
        channels[first.path] = {c: found[c].path for c in present}
        problems.extend(_completeness(case, found, required, config.required))
    return ChannelGroups(out, channels, problems)


def _completeness(
    case: str, found: Mapping[str, NameInfo], required: set[str], order: tuple[str, ...]
) -> list[Problem]:
    paths = sorted(i.path for i in found.values())
    missing = [c for c in order if c not in found]
    extra = sorted((c for c in found if c not in required), key=lambda c: (int(c), c))
    out = []
    if missing:
        word = "channel" if len(missing) == 1 else "channels"
        out.append(
            make_problem(
                "channels",
                paths,
                f"{paths[0]}: case {case} lacks {word} {', '.join(missing)} "
                f"(required: {', '.join(order)})",
                {"case": case, "missing": missing, "required": list(order)},
            )
        )
    if extra:
        word = "channel" if len(extra) == 1 else "channels"
        extra_paths = sorted(found[c].path for c in extra)
        out.append(
            make_problem(
                "channels",
                extra_paths,
                f"{extra_paths[0]}: case {case} has undeclared {word} {', '.join(extra)} "
                f"(required: {', '.join(order)})",
                {"case": case, "extra": extra, "required": list(order)},
            )
        )
    return out


def grid_problems(
    channels: Mapping[str, Mapping[str, str]],
    geometry: Callable[[list[str]], Mapping[str, Geometry | None]],
    position_tolerance: float,
    direction_tolerance: float,
) -> list[Problem]:
    """A ``channels`` problem for each channel not on its case's first channel's grid."""
    if not channels:
        return []
    from volsegsync.geometry import compare

    paths = sorted({p for group in channels.values() for p in group.values()})
    found = geometry(paths)
    problems = []
    for group in channels.values():
        ordered = list(group.items())
        first_channel, first = ordered[0]
        ref = found.get(first)
        if ref is None:
            continue  # an unreadable header is reported per file
        for channel, path in ordered[1:]:
            geo = found.get(path)
            if geo is None:
                continue
            diffs = compare(ref, geo, position_tolerance, direction_tolerance)
            diffs = [d for d in diffs if d.category != "frame_unknown"]
            if diffs:
                details: dict[str, Any] = {
                    "channel": channel,
                    "reference_channel": first_channel,
                    "property": diffs[0].property,
                    **diffs[0].details,
                }
                message = diffs[0].message.replace("segmentation", f"channel {channel}")
                message = message.replace("volume", f"channel {first_channel}", 1)
                problems.append(
                    make_problem(
                        "channels",
                        (path, first),
                        f"{path}: not on the grid of channel {first_channel}: {message}",
                        details,
                    )
                )
    return problems


def with_channels(
    entries: Iterable[Any], channels: Mapping[str, Mapping[str, str]], hashed: Any
) -> list[Any]:
    """Index entries with their ``channels`` filled in (``hashed``: path -> Hashed)."""
    from volsegsync.index import FileRecord

    out = []
    for e in entries:
        group = channels.get(e.volume.path) if e.volume is not None else None
        if group:
            records = tuple(
                (c, FileRecord(p, hashed[p].stat.size, hashed[p].digest))
                for c, p in group.items()
                if p in hashed
            )
            e = e._replace(channels=records)
        out.append(e)
    return out

"""``volsegsync pull``: fetch what the index records from a remote, then check it out.

Objects the remote lacks are listed (by the fetch) and everything else is restored
(the checkout reports those it could not restore and goes on).
"""

from __future__ import annotations

from typing import NamedTuple

from volsegsync.dataset import Dataset
from volsegsync.ops.checkout import CheckoutReport, run_checkout
from volsegsync.ops.checkout import ProgressFactory as CheckoutProgress
from volsegsync.ops.fetch import run_fetch
from volsegsync.ops.push import ProgressFactory, TransferReport
from volsegsync.remotes import DEFAULT_JOBS


class PullReport(NamedTuple):
    fetch: TransferReport
    checkout: CheckoutReport

    @property
    def ok(self) -> bool:
        return self.fetch.ok and not self.checkout.problems


def run_pull(
    ds: Dataset,
    remote_name: str | None = None,
    jobs: int | None = None,
    force: bool = False,
    progress: ProgressFactory | None = None,
    checkout_progress: CheckoutProgress | None = None,
) -> PullReport:
    fetched = run_fetch(ds, remote_name, None, jobs, progress=progress)
    # the objects this fetch stored were hashed on their way in: not again on the way out,
    # nor their first bytes read again (a reflink's are on the disk only);
    # writing the working files is I/O like the transfers: as many at once
    checked = run_checkout(
        ds,
        None,
        force=force,
        progress=checkout_progress,
        verified=fetched.hashed,
        sniffed=fetched.sniffed,
        jobs=jobs or DEFAULT_JOBS,
    )
    return PullReport(fetched, checked)

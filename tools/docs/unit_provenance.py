"""Where a set of results units came from, as the docs tables print it above themselves."""


def provenance(records):
    """'units: commit C; host H; FIRST to LAST' from unit.toml records (dicts)."""
    revisions = sorted({r.get("git_revision", "?") for r in records})
    hosts = sorted({r.get("host", "?") for r in records})
    started = sorted(r.get("started", "?") for r in records)
    return f"units: commit {', '.join(revisions)}; host {', '.join(hosts)}; {started[0]} to {started[-1]}"

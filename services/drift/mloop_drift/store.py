"""Drift's tables (the migrations' source: monitored versions, observations, reports) and its queries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, insert

from mloop_common.db import NAMING_CONVENTION, add_messaging_tables
from mloop_common.errors import NotFound
from mloop_common.profile import ReferenceProfile
from mloop_common.spec import DriftPolicy
from mloop_common.uow import Messaging, SqlUnit
from mloop_drift.cooldown import CooldownState
from mloop_drift.entities import Label, MonitoredVersion, Observation, Prediction, Report, ReportSummary, Revision

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
add_messaging_tables(metadata)

monitored = sa.Table(
    "monitored_versions",
    metadata,
    sa.Column("model", sa.String(63), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("task", sa.String(32), nullable=False),
    sa.Column("target", sa.String(200), nullable=False),
    sa.Column("features", sa.JSON, nullable=False),
    sa.Column("profile", sa.JSON, nullable=False),
    sa.Column("baseline", sa.JSON, nullable=False),
    sa.Column("window_size", sa.Integer, nullable=False),
    sa.Column("cooldown_windows", sa.Integer, nullable=False),
    sa.Column("next_window", sa.Integer, nullable=False, server_default="1"),
    sa.Column("window_fill", sa.Integer, nullable=False, server_default="0"),
    sa.Column("cooldown", sa.JSON, nullable=False),
    sa.Column("retired", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("promoted_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    # The spec's drift policy; null for versions watched before it was kept (the defaults apply).
    sa.Column("policy", sa.JSON),
    sa.Column("metric", sa.String(32)),
    sa.Column("time_column", sa.String(200)),
    # When this version last asked for a retrain that is not decided yet (one in flight at a time).
    sa.Column("retrain_requested_at", sa.DateTime(timezone=True)),
)
observations = sa.Table(
    "observations",
    metadata,
    sa.Column("request_id", sa.String(100), primary_key=True),
    sa.Column("model", sa.String(63), nullable=False),
    sa.Column("version", sa.Integer),
    sa.Column("logged_at", sa.DateTime(timezone=True)),
    sa.Column("inputs", sa.JSON),
    sa.Column("prediction", sa.JSON),
    sa.Column("probabilities", sa.JSON),
    sa.Column("label", sa.JSON),
    sa.Column("labelled_at", sa.DateTime(timezone=True)),
    sa.Column("window_index", sa.Integer),
    sa.Column("event_time", sa.DateTime(timezone=True)),
    # predictions not yet in a window, the rows of a window, and labelled predictions, per model
    sa.Index(
        "ix_observations_open",
        "model",
        "version",
        "logged_at",
        postgresql_where=sa.text("window_index IS NULL AND logged_at IS NOT NULL"),
    ),
    sa.Index(
        "ix_observations_window",
        "model",
        "version",
        "window_index",
        postgresql_where=sa.text("window_index IS NOT NULL"),
    ),
    sa.Index(
        "ix_observations_labelled",
        "model",
        "labelled_at",
        postgresql_where=sa.text("labelled_at IS NOT NULL AND logged_at IS NOT NULL"),
    ),
    # retention: the oldest predictions first, and labels still waiting for their prediction
    sa.Index("ix_observations_logged_at", "logged_at"),
    sa.Index("ix_observations_unmatched", "labelled_at", postgresql_where=sa.text("logged_at IS NULL")),
)
reports = sa.Table(
    "reports",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("model", sa.String(63), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("window_index", sa.Integer, nullable=False),
    sa.Column("revision", sa.Integer, nullable=False, server_default="1"),
    sa.Column("drift_detected", sa.Boolean, nullable=False),
    sa.Column("cause", sa.String(32)),
    sa.Column("action", sa.String(32)),
    sa.Column("emitted", sa.Boolean, nullable=False),
    sa.Column("held_for", sa.String(32)),
    sa.Column("basis", sa.String(16)),
    sa.Column("label_coverage", sa.Float),
    sa.Column("summary", sa.Text, nullable=False),
    sa.Column("report", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("updated_at", sa.DateTime(timezone=True)),
    sa.UniqueConstraint("model", "version", "window_index", "revision"),  # a window's verdict history
    sa.Index("ix_reports_created_at", "created_at"),  # retention: the oldest revisions first
)


class DriftUnit(Messaging, Protocol):
    """One transaction on drift's records."""

    async def add_monitored(self, monitored_version: MonitoredVersion) -> None:
        """Watch a newly promoted version and retire the model's others; one promoted again resumes its windows."""
        ...

    async def lock_monitored(self, model: str, version: int) -> MonitoredVersion | None:
        """A monitored version, locked until the unit ends so that one task at a time judges its windows."""
        ...

    async def monitored(self, model: str, version: int) -> MonitoredVersion | None:
        """The version's record, read without a lock (for the API)."""
        ...

    async def watch_only(self, model: str, version: int) -> bool:
        """Judge ``version``'s windows and retire the model's others; False (nothing changed) if it is not known."""
        ...

    async def advance(
        self, model: str, version: int, *, next_window: int, cooldown: CooldownState, window_fill: int | None = None
    ) -> None:
        """Record that the windows before ``next_window`` are judged, and the cooldown after them (and, for count
        windows, how many predictions window ``next_window`` holds so far; None leaves that as it is)."""
        ...

    async def mark_retrain(self, model: str, version: int, at: datetime | None) -> None:
        """Record that ``version`` asked for a retrain at ``at`` (None: the one it asked for is decided)."""
        ...

    async def record_predictions(self, model: str, version: int, predictions: Sequence[Prediction]) -> None:
        """Keep predictions, each in its window if it has one (a label that arrived first stays; a prediction
        already kept is left as it is)."""
        ...

    async def already_logged(self, request_ids: Sequence[str]) -> set[str]:
        """Those of ``request_ids`` whose prediction is kept already (a redelivered record is not counted twice)."""
        ...

    async def record_labels(self, model: str, labels: Sequence[Label]) -> None:
        """Keep labels; a label for a prediction not seen yet waits in its own observation."""
        ...

    async def open_versions(self, model: str) -> list[int]:
        """Versions of ``model`` with predictions not yet in a window."""
        ...

    async def open_rows(self, model: str, version: int) -> list[Observation]:
        """Predictions of a version not yet in a window (request id and times only), oldest first."""
        ...

    async def place_in_windows(self, model: str, version: int, windows: Mapping[str, int]) -> None:
        """Put open predictions (by request id) into the given windows: those kept before their version was
        watched, and event-time windows' arrivals."""
        ...

    async def window_rows(self, model: str, version: int, index: int, limit: int) -> list[Observation]:
        """The rows of window ``index`` (the newest ``limit`` of them), oldest first."""
        ...

    async def observation(self, request_id: str) -> Observation:
        """One prediction by its request id, with its label if one came; NotFound if drift never saw it."""
        ...

    async def windows_of(self, model: str, request_ids: Sequence[str]) -> list[tuple[int, int]]:
        """(version, window index) of the windows holding these predictions, ordered."""
        ...

    async def unjudged_windows(self, model: str, version: int, before: int) -> list[int]:
        """Indexes below ``before`` of a version's windows that hold rows but have no report yet, ordered."""
        ...

    async def count_labelled(self, model: str, version: int) -> int:
        """Labelled predictions made by this version: new evidence since it went live."""
        ...

    async def recent_labelled(self, model: str, limit: int) -> list[Observation]:
        """The newest ``limit`` labelled predictions of ``model`` (any version), oldest first."""
        ...

    async def add_report(self, report: Report) -> None:
        """Keep a new revision of a window's verdict."""
        ...

    async def update_report(self, report: Report) -> None:
        """Refresh a kept revision (its evidence, summary and alarm state) in place."""
        ...

    async def latest_report(self, model: str, version: int, index: int) -> Report | None:
        """The newest revision of a window's verdict."""
        ...

    async def report(self, model: str, report_id: str) -> Report:
        """One revision with the window's revision history."""
        ...

    async def reports(self, model: str, limit: int) -> list[ReportSummary]:
        """The newest revision of each of a model's windows, newest window first."""
        ...

    async def purge_observations(self, cutoff: datetime, limit: int) -> int:
        """Delete at most ``limit`` observations that `retention.observation_purgeable` allows; how many went."""
        ...

    async def purge_reports(self, cutoff: datetime, limit: int) -> int:
        """Delete at most ``limit`` revisions that `retention.report_purgeable` allows; how many went."""
        ...


# A version's reference profile is written once, when it is first watched (a row is never updated in
# place), so its parsed form is kept rather than validated again for every batch of predictions.
_PROFILES: dict[tuple[str, int, datetime], ReferenceProfile] = {}
_PROFILES_KEPT = 64


def _parsed_profile(model: str, version: int, promoted_at: datetime, stored: Any) -> ReferenceProfile:
    key = (model, version, promoted_at)
    parsed = _PROFILES.get(key)
    if parsed is None:
        if len(_PROFILES) >= _PROFILES_KEPT:
            _PROFILES.pop(next(iter(_PROFILES)))  # the oldest kept
        parsed = _PROFILES[key] = ReferenceProfile.model_validate(stored)
    return parsed


class SqlDriftUnit(SqlUnit):
    async def add_monitored(self, monitored_version: MonitoredVersion) -> None:
        values = monitored_version.model_dump(mode="json", exclude={"promoted_at", "retrain_requested_at"})
        values["cooldown"] = monitored_version.cooldown.to_dict()
        if monitored_version.promoted_at is not None:
            values["promoted_at"] = monitored_version.promoted_at
        statement = insert(monitored).values(**values)
        await self.session.execute(
            statement.on_conflict_do_update(index_elements=["model", "version"], set_={"retired": False})
        )
        await self.session.execute(
            sa.update(monitored)
            .where(monitored.c.model == monitored_version.model, monitored.c.version != monitored_version.version)
            .values(retired=True)
        )

    async def watch_only(self, model: str, version: int) -> bool:
        known = await self.session.execute(
            sa.update(monitored)
            .where(monitored.c.model == model, monitored.c.version == version)
            .values(retired=False)
            .returning(monitored.c.version)
        )
        if known.first() is None:
            return False
        await self.session.execute(
            sa.update(monitored).where(monitored.c.model == model, monitored.c.version != version).values(retired=True)
        )
        return True

    async def lock_monitored(self, model: str, version: int) -> MonitoredVersion | None:
        return await self._monitored(model, version, lock=True)

    async def monitored(self, model: str, version: int) -> MonitoredVersion | None:
        return await self._monitored(model, version, lock=False)

    async def _monitored(self, model: str, version: int, *, lock: bool) -> MonitoredVersion | None:
        which = (monitored.c.model == model, monitored.c.version == version)
        # The profile (hundreds of kB of JSON) is read only when its parsed form is not kept already.
        query = sa.select(*(c for c in monitored.c if c.name != "profile")).where(*which)
        row = (await self.session.execute(query.with_for_update() if lock else query)).first()
        if row is None:
            return None
        key = (row.model, row.version, row.promoted_at)
        profile = _PROFILES.get(key)
        if profile is None:
            stored = (await self.session.execute(sa.select(monitored.c.profile).where(*which))).scalar_one()
            profile = _parsed_profile(*key, stored)
        return MonitoredVersion.model_validate(
            {
                **row._mapping,
                "profile": profile,
                "cooldown": CooldownState.from_dict(row.cooldown),
                "policy": known_policy(row.policy),
            }
        )

    async def advance(
        self, model: str, version: int, *, next_window: int, cooldown: CooldownState, window_fill: int | None = None
    ) -> None:
        values: dict[str, Any] = {"next_window": next_window, "cooldown": cooldown.to_dict()}
        if window_fill is not None:
            values["window_fill"] = window_fill
        await self.session.execute(
            sa.update(monitored).where(monitored.c.model == model, monitored.c.version == version).values(**values)
        )

    async def mark_retrain(self, model: str, version: int, at: datetime | None) -> None:
        await self.session.execute(
            sa.update(monitored)
            .where(monitored.c.model == model, monitored.c.version == version)
            .values(retrain_requested_at=at)
        )

    async def record_predictions(self, model: str, version: int, predictions: Sequence[Prediction]) -> None:
        if not predictions:
            return
        statement = insert(observations)
        upsert = statement.on_conflict_do_update(
            index_elements=["request_id"],
            set_={
                k: statement.excluded[k]
                for k in ("version", "logged_at", "inputs", "prediction", "probabilities", "event_time", "window_index")
            },
            where=observations.c.logged_at.is_(None),
        )
        # Rows as parameters of one prepared statement (executemany), not one statement with every value in it:
        # building that statement's hundreds of thousands of parameters cost more than PostgreSQL's work.
        # Plain attribute reads: pydantic's model_dump costs as much again as the rest of building a row.
        rows = [
            {
                "request_id": p.request_id,
                "model": model,
                "version": version,
                "logged_at": p.logged_at,
                "inputs": p.inputs,
                "prediction": p.prediction,
                "probabilities": p.probabilities,
                "event_time": p.event_time,
                "window_index": p.window_index,
            }
            for p in predictions
        ]
        await self.session.execute(upsert, rows)

    async def already_logged(self, request_ids: Sequence[str]) -> set[str]:
        if not request_ids:
            return set()
        query = sa.select(observations.c.request_id).where(
            observations.c.request_id == sa.any_(sa.literal(list(request_ids), type_=ARRAY(sa.String))),
            observations.c.logged_at.is_not(None),
        )
        return set((await self.session.execute(query)).scalars())

    async def record_labels(self, model: str, labels: Sequence[Label]) -> None:
        if not labels:
            return
        statement = insert(observations).values([{**label.model_dump(), "model": model} for label in labels])
        await self.session.execute(
            statement.on_conflict_do_update(
                index_elements=["request_id"],
                set_={"label": statement.excluded.label, "labelled_at": statement.excluded.labelled_at},
            )
        )

    async def open_versions(self, model: str) -> list[int]:
        query = (
            sa.select(observations.c.version)
            .distinct()
            .where(
                observations.c.model == model,
                observations.c.window_index.is_(None),
                observations.c.logged_at.is_not(None),
            )
        )
        return [v for (v,) in await self.session.execute(query)]

    def _open(self, model: str, version: int) -> sa.Select[Any]:
        return sa.select(observations).where(
            observations.c.model == model,
            observations.c.version == version,
            observations.c.window_index.is_(None),
            observations.c.logged_at.is_not(None),
        )

    async def open_rows(self, model: str, version: int) -> list[Observation]:
        columns = [observations.c[name] for name in ("request_id", "model", "logged_at", "event_time")]
        query = (
            self._open(model, version)
            .with_only_columns(*columns)
            .order_by(observations.c.logged_at, observations.c.request_id)
        )
        return [Observation.model_validate(row) for row in await self.session.execute(query)]

    async def place_in_windows(self, model: str, version: int, windows: Mapping[str, int]) -> None:
        by_window: dict[int, list[str]] = {}
        for request_id, index in windows.items():
            by_window.setdefault(index, []).append(request_id)
        for index, ids in by_window.items():
            await self.session.execute(
                sa.update(observations)
                .where(
                    observations.c.request_id.in_(ids),
                    observations.c.model == model,
                    observations.c.version == version,
                    observations.c.window_index.is_(None),
                )
                .values(window_index=index)
            )

    async def observation(self, request_id: str) -> Observation:
        row = (
            await self.session.execute(sa.select(observations).where(observations.c.request_id == request_id))
        ).first()
        if row is None or row.logged_at is None:
            raise NotFound(f"no prediction with request id {request_id!r} was logged", field="request_id")
        return Observation.model_validate(row)

    async def window_rows(self, model: str, version: int, index: int, limit: int) -> list[Observation]:
        query = (
            sa.select(observations)
            .where(
                observations.c.model == model,
                observations.c.version == version,
                observations.c.window_index == index,
                observations.c.logged_at.is_not(None),
            )
            .order_by(observations.c.logged_at.desc(), observations.c.request_id.desc())
            .limit(limit)
        )
        newest_first = [_observation(row) for row in await self.session.execute(query)]
        return newest_first[::-1]

    async def windows_of(self, model: str, request_ids: Sequence[str]) -> list[tuple[int, int]]:
        if not request_ids:
            return []
        query = (
            sa.select(observations.c.version, observations.c.window_index)
            .distinct()
            .where(
                observations.c.model == model,
                observations.c.request_id.in_(list(request_ids)),
                observations.c.window_index.is_not(None),
                observations.c.version.is_not(None),
            )
            .order_by(observations.c.version, observations.c.window_index)
        )
        return [(int(v), int(i)) for v, i in await self.session.execute(query)]

    async def unjudged_windows(self, model: str, version: int, before: int) -> list[int]:
        judged = sa.select(reports.c.window_index).where(reports.c.model == model, reports.c.version == version)
        query = (
            sa.select(observations.c.window_index)
            .distinct()
            .where(
                observations.c.model == model,
                observations.c.version == version,
                observations.c.window_index.is_not(None),
                observations.c.window_index < before,
                observations.c.window_index.not_in(judged),
            )
            .order_by(observations.c.window_index)
        )
        return [int(i) for (i,) in await self.session.execute(query)]

    async def count_labelled(self, model: str, version: int) -> int:
        query = sa.select(sa.func.count()).where(
            observations.c.model == model,
            observations.c.version == version,
            observations.c.labelled_at.is_not(None),
            observations.c.logged_at.is_not(None),
        )
        return int((await self.session.execute(query)).scalar_one())

    async def recent_labelled(self, model: str, limit: int) -> list[Observation]:
        query = (
            sa.select(observations)
            .where(
                observations.c.model == model,
                observations.c.labelled_at.is_not(None),
                observations.c.logged_at.is_not(None),
            )
            .order_by(observations.c.logged_at.desc())
            .limit(limit)
        )
        newest_first = [_observation(row) for row in await self.session.execute(query)]
        return newest_first[::-1]

    async def add_report(self, report: Report) -> None:
        await self.session.execute(sa.insert(reports).values(**_report_values(report)))

    async def update_report(self, report: Report) -> None:
        values = _report_values(report)
        await self.session.execute(sa.update(reports).where(reports.c.id == report.id).values(**values))

    async def latest_report(self, model: str, version: int, index: int) -> Report | None:
        query = (
            sa.select(reports)
            .where(reports.c.model == model, reports.c.version == version, reports.c.window_index == index)
            .order_by(reports.c.revision.desc())
            .limit(1)
        )
        row = (await self.session.execute(query)).first()
        return None if row is None else Report.model_validate(row)

    async def report(self, model: str, report_id: str) -> Report:
        query = sa.select(reports).where(reports.c.model == model, reports.c.id == report_id)
        row = (await self.session.execute(query)).first()
        if row is None:
            raise NotFound(f"drift report {report_id!r} of model {model!r} does not exist")
        history = (
            sa.select(*[reports.c[name] for name in Revision.model_fields])
            .where(
                reports.c.model == model, reports.c.version == row.version, reports.c.window_index == row.window_index
            )
            .order_by(reports.c.revision)
        )
        revisions = [Revision.model_validate(r) for r in await self.session.execute(history)]
        return Report.model_validate({**row._mapping, "revisions": revisions})

    async def reports(self, model: str, limit: int) -> list[ReportSummary]:
        newest = (
            sa.select(reports.c.version, reports.c.window_index, sa.func.max(reports.c.revision).label("revision"))
            .where(reports.c.model == model)
            .group_by(reports.c.version, reports.c.window_index)
            .subquery()
        )
        query = (
            sa.select(*[c for c in reports.c if c.name != "report"])
            .join(
                newest,
                sa.and_(
                    reports.c.version == newest.c.version,
                    reports.c.window_index == newest.c.window_index,
                    reports.c.revision == newest.c.revision,
                ),
            )
            .where(reports.c.model == model)
            .order_by(reports.c.version.desc(), reports.c.window_index.desc())
            .limit(limit)
        )
        return [ReportSummary.model_validate(row) for row in await self.session.execute(query)]

    async def purge_observations(self, cutoff: datetime, limit: int) -> int:
        # Aliased: a subquery on the table being deleted from would otherwise correlate to the DELETE.
        o, r, m = observations.alias("old"), reports, monitored
        in_window = sa.and_(r.c.model == o.c.model, r.c.version == o.c.version, r.c.window_index == o.c.window_index)
        judged = sa.exists().where(in_window)
        revised_since = sa.exists().where(in_window, sa.func.coalesce(r.c.updated_at, r.c.created_at) >= cutoff)
        watched = sa.exists().where(m.c.model == o.c.model, m.c.version == o.c.version, m.c.retired.is_(False))
        predictions = (
            sa.select(o.c.request_id)
            .where(o.c.logged_at < cutoff, ~revised_since, sa.or_(judged, ~watched))
            .order_by(o.c.logged_at)
            .limit(limit)
        )
        waiting = (
            sa.select(o.c.request_id)
            .where(o.c.logged_at.is_(None), o.c.labelled_at < cutoff)
            .order_by(o.c.labelled_at)
            .limit(limit)
        )
        deleted = 0
        for chosen in (predictions, waiting):
            if deleted >= limit:
                break
            result = await self.session.execute(
                sa.delete(observations).where(observations.c.request_id == _any_of(chosen.limit(limit - deleted)))
            )
            deleted += result.rowcount or 0  # type: ignore[attr-defined]
        return deleted

    async def purge_reports(self, cutoff: datetime, limit: int) -> int:
        r, other, o = reports.alias("old"), reports.alias("sibling"), observations
        same_window = sa.and_(
            other.c.model == r.c.model, other.c.version == r.c.version, other.c.window_index == r.c.window_index
        )
        revised_since = sa.exists().where(
            same_window, sa.func.coalesce(other.c.updated_at, other.c.created_at) >= cutoff
        )
        alarmed = sa.exists().where(same_window, other.c.emitted.is_(True))
        superseded = sa.exists().where(same_window, other.c.revision > r.c.revision)
        rows_left = sa.exists().where(
            o.c.model == r.c.model, o.c.version == r.c.version, o.c.window_index == r.c.window_index
        )
        chosen = (
            sa.select(r.c.id)
            .where(
                r.c.created_at < cutoff,
                r.c.emitted.is_(False),
                ~revised_since,
                ~rows_left,
                sa.or_(superseded, ~alarmed),  # the latest revision of a window that raised an alarm stays
            )
            .order_by(r.c.created_at)
            .limit(limit)
        )
        result = await self.session.execute(sa.delete(reports).where(reports.c.id == _any_of(chosen)))
        return result.rowcount or 0  # type: ignore[attr-defined]


def _any_of(chosen: sa.Select[Any]) -> Any:
    """``= ANY(ARRAY(chosen))``: the batch is picked first, then deleted by primary key (``IN (subquery)``
    lets the planner hash-join the whole table instead)."""
    return sa.any_(sa.func.array(chosen.scalar_subquery()))


def _report_values(report: Report) -> dict[str, Any]:
    values = report.model_dump(mode="json", exclude={"created_at", "updated_at", "revisions"})
    for stamp in ("created_at", "updated_at"):
        if getattr(report, stamp) is not None:
            values[stamp] = getattr(report, stamp)
    return values


def known_policy(stored: Mapping[str, Any] | None) -> DriftPolicy:
    """A stored or received drift policy, reading only the options this version of drift knows."""
    known = {k: v for k, v in (stored or {}).items() if k in DriftPolicy.model_fields}
    return DriftPolicy.model_validate(known)


def _observation(row: sa.Row[Any]) -> Observation:
    """A row of the observations table as read back in bulk (windows of thousands): its columns already have the
    model's types, so pydantic's validation of each one is skipped."""
    return Observation.model_construct(**row._mapping)

"""What a failed handler means, decided over the exception objects the drivers really raise."""

import errno
import socket
import subprocess
import sys

import asyncpg
import httpx
import pytest
import sqlalchemy.exc
from aiokafka.errors import (
    CommitFailedError,
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
)
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_dbapi

from mloop_common.bus import classify
from mloop_common.errors import PayloadTooLarge, PermanentError, ServiceUnavailable, TransientError
from mloop_common.events import InvalidEvent, ensure_fits, record_size

DBAPI = AsyncAdapt_asyncpg_dbapi(asyncpg)


def through_sqlalchemy(error: Exception, *, invalidated: bool = False) -> sqlalchemy.exc.DBAPIError:
    """What SQLAlchemy's asyncpg dialect raises for a driver error (the adaptation of its ``_handle_exception``)."""
    mapping = DBAPI._asyncpg_error_translate
    adapted_class = next(mapping[cls] for cls in type(error).__mro__ if cls in mapping)
    adapted = adapted_class(f"{type(error)}: {error}")
    adapted.pgcode = adapted.sqlstate = getattr(error, "sqlstate", None)
    adapted.__cause__ = error
    wrapped = sqlalchemy.exc.DBAPIError.instance(
        "SELECT 1", {}, adapted, DBAPI.Error, connection_invalidated=invalidated
    )
    wrapped.__cause__ = adapted
    return wrapped


def caused_by(outer: Exception, cause: BaseException) -> Exception:
    outer.__cause__ = cause
    return outer


DATABASE_DOWN = [
    asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
    asyncpg.exceptions.CrashShutdownError("terminating connection because of crash of another server process"),
    asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
    asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already"),
    asyncpg.exceptions.ConnectionFailureError("could not receive data from server"),
    asyncpg.exceptions.ReadOnlySQLTransactionError("cannot execute INSERT in a read-only transaction"),
    asyncpg.exceptions.SerializationError("could not serialize access due to concurrent update"),
    asyncpg.exceptions.DeadlockDetectedError("deadlock detected"),
]


@pytest.mark.parametrize("error", DATABASE_DOWN, ids=lambda e: type(e).__name__)
def test_a_database_that_is_down_or_restarting_is_transient_raw_or_wrapped(error: Exception) -> None:
    assert classify(error) == "transient"
    assert classify(through_sqlalchemy(error)) == "transient"
    assert classify(caused_by(RuntimeError("while recording the run"), through_sqlalchemy(error))) == "transient"


def test_a_connection_closed_under_the_handler_is_transient() -> None:
    closed = asyncpg.exceptions.InterfaceError("connection is closed")

    assert classify(closed) == "transient"
    assert classify(through_sqlalchemy(closed, invalidated=True)) == "transient"


def test_sqlalchemy_connection_level_errors_are_transient() -> None:
    pool_timeout = sqlalchemy.exc.TimeoutError("QueuePool limit of size 5 overflow 10 reached, connection timed out")
    operational = sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("server closed the connection"))
    disconnected = sqlalchemy.exc.DisconnectionError("connection invalidated")

    assert [classify(e) for e in (pool_timeout, operational, disconnected)] == ["transient"] * 3


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.NumericValueOutOfRangeError('value "1099511627776" is out of range for type integer'),
        asyncpg.exceptions.InvalidTextRepresentationError('invalid input syntax for type integer: "abc"'),
        asyncpg.exceptions.CharacterNotInRepertoireError("invalid byte sequence for encoding UTF8: 0x00"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_a_data_error_is_permanent(error: Exception) -> None:
    assert classify(error) == "permanent"
    assert classify(through_sqlalchemy(error)) == "permanent"


def test_a_data_error_without_a_sqlstate_is_permanent_by_its_class() -> None:
    assert classify(sqlalchemy.exc.DataError("INSERT ...", {}, Exception("value too long"))) == "permanent"


def test_an_integrity_error_gets_the_normal_attempts_since_a_retry_may_resolve_a_race() -> None:
    duplicate = asyncpg.exceptions.UniqueViolationError("duplicate key value violates unique constraint")

    assert classify(through_sqlalchemy(duplicate)) == "retry"
    assert classify(sqlalchemy.exc.IntegrityError("INSERT ...", {}, Exception("duplicate"))) == "retry"


def test_a_bug_in_the_sql_gets_the_normal_attempts() -> None:
    missing = asyncpg.exceptions.UndefinedTableError('relation "runs" does not exist')

    assert classify(through_sqlalchemy(missing)) == "retry"


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"),
        ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
        TimeoutError(),
        OSError(errno.EHOSTUNREACH, "No route to host"),
        socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
        httpx.ConnectError("All connection attempts failed"),
        httpx.ReadTimeout("timed out"),
        KafkaConnectionError("Connection at 127.0.0.1:9092 closed"),
        KafkaTimeoutError(),
        NotLeaderForPartitionError(),
        TransientError("registry unreachable"),
        ServiceUnavailable("registry unreachable"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_an_unreachable_dependency_is_transient(error: Exception) -> None:
    assert classify(error) == "transient"


@pytest.mark.parametrize(
    "error",
    [
        PermanentError("cannot ever work"),
        InvalidEvent("record value is not JSON"),
        PayloadTooLarge("an event for topic 'model.trained' is 2000000 bytes"),
        MessageSizeTooLargeError(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_a_message_that_can_never_succeed_is_permanent(error: Exception) -> None:
    assert classify(error) == "permanent"


@pytest.mark.parametrize(
    "error",
    [ValueError("bad"), KeyError("x"), RecursionError(), FileNotFoundError(2, "missing"), CommitFailedError()],
    ids=lambda e: type(e).__name__,
)
def test_anything_else_gets_the_normal_attempts(error: Exception) -> None:
    assert classify(error) == "retry"


def test_mloop_errors_decide_before_what_they_wrap() -> None:
    refused = caused_by(PermanentError("spec cannot be read"), ConnectionResetError())

    assert classify(refused) == "permanent"


def test_classifying_needs_no_database_driver() -> None:
    code = "import sys, mloop_common.bus; print(sorted(m for m in ('sqlalchemy', 'asyncpg') if m in sys.modules))"

    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout

    assert imported.strip() == "[]"


def test_an_event_over_the_limit_is_refused_naming_its_topic_and_size() -> None:
    headers = [("ce_id", b"1234")]

    ensure_fits("model.trained", b"k", b"v" * 100, headers, limit=200)
    with pytest.raises(PayloadTooLarge, match=r"'model.trained' is 1010 bytes encoded, over the 1000-byte limit"):
        ensure_fits("model.trained", b"k", b"v" * 1000, headers, limit=1000)
    assert record_size(b"k", b"v" * 1000, headers) == 1010

"""Every error code the service raises has its HTTP status in the one table, and the table is what answers."""

import pickle
import re
from pathlib import Path

import pytest

from lit_bundle.prompts import TemplateError
from service.backlog import QueueFull
from service.encoders import BackendError, BackendUnavailable
from service.errors import STATUS, ApiError, api_error
from service.label_store import LabelError, LabelStoreUnavailable

SERVICE = Path(__file__).resolve().parents[1] / "service"
RAISED = re.compile(r'(?:ApiError|LabelError)\(\s*"([a-z0-9_]+)"|CODE = "([a-z0-9_]+)"')


def test_every_code_raised_in_the_service_has_a_status() -> None:
    raised = {a or b for path in SERVICE.glob("*.py") for a, b in RAISED.findall(path.read_text())}
    assert len(raised) > 30  # the scan sees the codes (a broken pattern would find none)
    assert not raised - set(STATUS), f"codes without an HTTP status: {sorted(raised - set(STATUS))}"


def test_an_unknown_code_is_refused_where_it_is_raised() -> None:
    with pytest.raises(ValueError, match="no HTTP status"):
        ApiError("no_such_code", "message")


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (BackendUnavailable("down"), 503),
        (BackendError("refused"), 502),
        (LabelStoreUnavailable("redis away"), 503),
        (QueueFull(512, 512), 429),
        (LabelError("too_many_labels", "too many"), 413),
        (api_error(TemplateError("no {}")), 422),
    ],
)
def test_domain_errors_carry_their_code_and_round_trip(error: ApiError, status: int) -> None:
    assert error.status == status and error.body()["error"]["code"] in STATUS
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), copy.code, copy.message) == (type(error), error.code, error.message)

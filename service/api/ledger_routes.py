"""The ledger's routes: feedback on a request's answer, and a request's full record (what the dashboard links to)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import Field

from service.api.errors import APIError
from service.api.protocol import StrictModel
from service.api.serving import parse, read_json
from service.state.ledger import Ledger, LedgerRecord

router = APIRouter()

REQUEST_ID = r"^(chatcmpl-|cmpl-)?[0-9a-f]{32}$"


class FeedbackRequest(StrictModel):
    """`request_id` is the response's `id` (or its `x-request-id` header, or `ponder.request_id`)."""

    request_id: str = Field(pattern=REQUEST_ID)
    correct: bool


def bare_id(request_id: str) -> str:
    return request_id.rsplit("-", 1)[-1]


def unknown(request_id: str) -> APIError:
    return APIError(404, f"No request {request_id!r} in the ledger (unknown, or older than its retention)", param="request_id", code="request_not_found")


@router.post("/v1/feedback")
async def feedback(request: Request) -> dict[str, Any]:
    ledger: Ledger = request.app.state.ledger
    body: FeedbackRequest = parse(FeedbackRequest, await read_json(request, 4096))
    record = await ledger.feedback(bare_id(body.request_id), body.correct)
    if record is None:
        raise unknown(body.request_id)
    assert record.feedback is not None
    return {"object": "ponder.feedback", "request_id": record.id, "correct": record.correct, "time": record.feedback.time}


@router.get("/v1/requests/{request_id}")
async def request_record(request: Request, request_id: str) -> LedgerRecord:
    ledger: Ledger = request.app.state.ledger
    record = await ledger.get(bare_id(request_id))
    if record is None:
        raise unknown(request_id)
    return record


# The dashboard's view of the same record: behind the dashboard's access rule (PONDER_AUTH_DASHBOARD), not the API's.
router.add_api_route("/dashboard/requests/{request_id}", request_record, methods=["GET"], include_in_schema=False)

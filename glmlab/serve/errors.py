"""Every error the server answers, in OpenAI's shape: {"error": {"message", "type", "param", "code"}}.

One place maps exceptions to statuses, so a client's mistake is always a 4xx with a message that says
what to fix, never a 500, and never takes the server down: glmlab's InputError/AdapterError/ConfigError
-> 400 (BusyError, a shared budget in use -> 503), pydantic validation -> 400 (not FastAPI's default
422), unknown routes -> 404, and only a bug in glmlab itself -> 500.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from glmlab.errors import BusyError, GlmlabError

logger = logging.getLogger(__name__)

# status -> OpenAI error type
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable",
    504: "timeout_error",
}


# status -> what it means on this server (the OpenAPI document's response descriptions)
STATUS_MEANINGS = {
    400: "Bad request: invalid JSON or field, bad image or adapter, unusable sampling value, prompt over "
    "the context, or a Host header the server does not answer to.",
    401: "Missing or wrong API key.",
    404: "Unknown model or adapter.",
    413: "Request body over --max-request-bytes.",
    415: "A POST body that is not sent as Content-Type: application/json.",
    429: "Queue full (--max-concurrency), or the client's rate limit reached (--rate-limit-rpm, "
    "--rate-limit-tpm); retry after the Retry-After seconds.",
    500: "Internal error: a bug in glmlab (see the server log).",
    503: "The model is still loading or failed to load, or the image decode memory is in use (Retry-After).",
    504: "The request did not finish within --timeout.",
}


class ErrorObject(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """OpenAI's error body, the shape of every error this server answers."""

    error: ErrorObject


ERROR_SCHEMA_REF = "#/components/schemas/ErrorResponse"


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` for a route: each status with its meaning and the error schema (always
    JSON, also on routes that answer plain text; `error_schemas` adds the referenced components)."""
    content = {"application/json": {"schema": {"$ref": ERROR_SCHEMA_REF}}}
    return {status: {"description": STATUS_MEANINGS[status], "content": content} for status in statuses}


def error_schemas() -> dict[str, Any]:
    """OpenAPI components for ErrorResponse and the models it uses."""
    schema = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    return {**schema.pop("$defs", {}), "ErrorResponse": schema}


class APIError(Exception):
    """An error answered with `status` and OpenAI's error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, code=self.code, param=self.param)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def error_body(
    status: int, message: str, *, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": ERROR_TYPES.get(status, "invalid_request_error"),
            "param": param,
            "code": code,
        }
    }


def model_not_found(name: str, known: list[str]) -> APIError:
    return APIError(
        404,
        f"model {name!r} does not exist; this server has: {', '.join(known)}. Load an "
        "adapter with POST /v1/load_lora_adapter.",
        code="model_not_found",
        param="model",
    )


def from_glmlab_error(error: GlmlabError) -> APIError:
    """A glmlab error raised while serving a request: the request was at fault (400), or a shared
    budget was in use (BusyError: 503, retry)."""
    if isinstance(error, BusyError):
        return APIError(503, str(error), code="server_busy", headers={"Retry-After": "1"})
    return APIError(400, f"{type(error).__name__}: {error}", code=type(error).__name__)


def install(app: FastAPI) -> None:
    """Register the handlers that turn every exception into OpenAI's error JSON."""

    @app.exception_handler(APIError)
    async def _api_error(request: Request, error: APIError) -> JSONResponse:
        return error.response()

    @app.exception_handler(GlmlabError)
    async def _glmlab_error(request: Request, error: GlmlabError) -> JSONResponse:
        return from_glmlab_error(error).response()

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        return validation_error(error.errors()).response()

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, error: HTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}
        message = str(error.detail)
        if error.status_code == 404:
            message = f"no route {request.method} {request.url.path}; see GET /v1/models and POST /v1/chat/completions."
        return APIError(
            error.status_code,
            message,
            code=codes.get(error.status_code),
            headers=getattr(error, "headers", None),
        ).response()

    @app.exception_handler(Exception)
    async def _bug(request: Request, error: Exception) -> JSONResponse:
        logger.exception("internal error while serving %s %s", request.method, request.url.path)
        return APIError(
            500, f"internal server error ({type(error).__name__}); see the server log.", code="internal_error"
        ).response()


def validation_error(errors: list[dict[str, Any]]) -> APIError:
    """Pydantic's errors as one 400: each bad field by its JSON path, with what was wrong."""
    for item in errors:
        if item.get("type") == "json_invalid":
            detail = (item.get("ctx") or {}).get("error", "")
            return APIError(400, f"the request body is not valid JSON ({detail}).", code="invalid_json")
        if item.get("loc") == ("body",) and item.get("type") == "model_attributes_type":
            return APIError(
                400,
                "the request body must be a JSON object sent with 'Content-Type: application/json'.",
                code="invalid_json",
            )
    # A field that may be a string or a list (message content) fails once per alternative; keep the
    # errors of the alternative the client meant, and drop pydantic's branch labels from the path.
    specific = [
        item for item in errors if not (_in_union_branch(item) and item.get("type") in _BRANCH_MISMATCH)
    ]
    errors = specific or errors
    parts = [f"{_path(item) or 'body'}: {item.get('msg', 'invalid')}" for item in errors[:5]]
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return APIError(
        400,
        "invalid request: " + "; ".join(parts) + more,
        code="invalid_request",
        param=_path(errors[0]) or None,
    )


_BRANCH_MISMATCH = {"string_type", "list_type", "none_required", "model_type", "dict_type"}


def _in_union_branch(item: dict[str, Any]) -> bool:
    return any(isinstance(part, str) and not part.isidentifier() for part in item.get("loc", ()))


def _path(item: dict[str, Any]) -> str:
    return ".".join(
        str(part)
        for part in item.get("loc", ())
        if part != "body" and not (isinstance(part, str) and not part.isidentifier())
    )

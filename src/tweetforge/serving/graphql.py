"""GraphQL at /graphql (strawberry): queries for models and experiments, mutations generate and feedback.
Arguments are validated by the REST request models and every resolver calls the same service layer, so
the two interfaces cannot drift apart. Resolvers run the blocking service calls in a worker thread of the
pool REST uses.
Bounded like REST: the same body limit and rate limit (each generate, aliased or not, is one generation
request), and limits on a document's tokens, depth, aliases and operations."""

from __future__ import annotations

import json
from typing import Any

import strawberry
from graphql import GraphQLError, OperationDefinitionNode, ValidationRule
from pydantic import ValidationError
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.concurrency import run_in_threadpool
from strawberry.extensions import AddValidationRules, MaskErrors, MaxAliasesLimiter, MaxTokensLimiter, QueryDepthLimiter
from strawberry.fastapi import GraphQLRouter
from strawberry.http.base import HTTPException
from strawberry.types import Info

from tweetforge.db.engine import StoreBusy
from tweetforge.serving.dependencies import check_rate_limit
from tweetforge.serving.limits import Limits
from tweetforge.serving.protocol import FeedbackRequest, GenerateRequest, sampling_of
from tweetforge.serving.service import Service, ServiceError, store_refusal


class RequestError(GraphQLError):
    """Shown to the client as the GraphQL error message. Its extensions say whose fault it is the way GraphQL
    clients read it (Apollo's codes), with the REST API's error code as the reason and its HTTP status."""

    def __init__(self, message: str, reason: str = "bad_request", status: int = 400):
        code = "BAD_USER_INPUT" if status < 500 else "SERVICE_UNAVAILABLE"
        super().__init__(message, extensions={"code": code, "reason": reason, "status": status})


@strawberry.type
class GeneratedPost:
    text: str
    generated: bool
    ended: bool
    filtered_copies: int


@strawberry.type
class Generation:
    generation_id: str
    model: str
    version: int
    experiment: str | None
    variant: str | None
    user_id: str
    author: str | None
    posts: list[GeneratedPost]
    filtered_copies: int
    dropped: int


@strawberry.type
class Model:
    ref: str
    name: str
    version: int
    kind: str
    aliases: list[str]
    authors: list[str]
    loaded: bool
    test_bits_per_char: float | None


@strawberry.type
class VariantStatistics:
    variant: str
    model: str
    exposures: int
    conversions: int
    rate: float | None
    low: float
    high: float
    p_best: float


@strawberry.type
class Experiment:
    name: str
    metric: str
    status: str
    state: str
    winner: str | None
    reason: str
    always_valid_p: float
    variants: list[VariantStatistics]


@strawberry.type
class FeedbackAck:
    id: int
    generation_id: str
    event: str
    committed: bool


def _service(info: Info) -> Service:
    return info.context["request"].app.state.service


def _refused(exc: ServiceError) -> RequestError:
    return RequestError(f"{exc.code}: {exc.message}", exc.code, exc.status)


async def _call(function: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return await run_in_threadpool(function, *args, **kwargs)  # anyio's 40 threads, as REST; asyncio's default pool has cpu+4
    except ServiceError as exc:
        raise _refused(exc) from None
    except (OperationalError, InterfaceError, StoreBusy) as exc:
        raise _refused(store_refusal(exc)) from None


def _validated(request_model: Any, **fields: Any) -> Any:
    try:
        return request_model(**{k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        raise RequestError("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()), "validation_error", 422) from None


@strawberry.type
class Query:
    @strawberry.field(description="Every registered version; loaded = in this server's memory.")
    async def models(self, info: Info) -> list[Model]:
        from tweetforge.registry.versions import list_versions

        service = _service(info)
        loaded = {m.version.ref for m in service.loaded()}
        return [Model(ref=v.ref, name=v.name, version=v.version, kind=v.kind, aliases=v.aliases, authors=v.params.get("authors", []),
                      loaded=v.ref in loaded, test_bits_per_char=v.metrics.get("test", {}).get(v.dataset, {}).get("bits_per_char"))
                for v in await _call(list_versions, service.engine)]  # off the event loop, like every database call

    @strawberry.field(description="An experiment's rates with 95% intervals, P(best) and decision state.")
    async def experiment(self, info: Info, name: str) -> Experiment:
        from tweetforge.experiments.ab import ExperimentError, experiment_status

        try:
            status = await run_in_threadpool(experiment_status, _service(info).engine, name)
        except ExperimentError as exc:
            raise RequestError(str(exc), "unknown_experiment", 404) from None
        return Experiment(
            name=name, metric=status.experiment.metric, status=status.experiment.status, state=status.state, winner=status.winner,
            reason=status.reason, always_valid_p=status.always_valid_p,
            variants=[VariantStatistics(variant=r.variant, model=r.model, exposures=r.exposures, conversions=r.conversions,
                                        rate=None if r.rate != r.rate else r.rate, low=r.low, high=r.high, p_best=r.p_best)
                      for r in status.results],
        )


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Posts from a model or an experiment's variant; every post is generated: true.")
    async def generate(self, info: Info, model: str, prompt: str = "", n: int = 1, author: str | None = None, temperature: float = 1.0,
                       top_p: float = 0.95, max_chars: int | None = None, seed: int | None = None, user_id: str | None = None) -> Generation:
        try:
            check_rate_limit(info.context["request"])
        except ServiceError as exc:
            raise _refused(exc) from None
        request = _validated(GenerateRequest, model=model, prompt=prompt, n=n, author=author, temperature=temperature, top_p=top_p,
                             max_chars=max_chars, seed=seed, user_id=user_id)
        served = await _call(_service(info).generate, request.model, request.prompt, request.n, author=request.author,
                             sampling=sampling_of(request), seed=request.seed, user_id=request.user_id)
        return Generation(
            generation_id=served.generation_id, model=served.version.name, version=served.version.version, experiment=served.experiment,
            variant=served.variant, user_id=served.user_id, author=served.author,
            posts=[GeneratedPost(text=s.text, generated=True, ended=s.ended, filtered_copies=s.filtered_copies) for s in served.posts],
            filtered_copies=served.filtered_copies, dropped=served.dropped,
        )

    @strawberry.mutation(description="like, dislike, copy, share, or choice (arena; winner_id = the generation that won).")
    async def feedback(self, info: Info, generation_id: str, event: str, winner_id: str | None = None, user_id: str | None = None) -> FeedbackAck:
        request = _validated(FeedbackRequest, generation_id=generation_id, event=event, winner_id=winner_id, user_id=user_id)
        event_id = await _call(_service(info).feedback, request.generation_id, request.event, winner_id=request.winner_id,
                               user_id=request.user_id)
        return FeedbackAck(id=event_id, generation_id=request.generation_id, event=request.event, committed=True)


def max_operations(limit: int) -> type[ValidationRule]:
    class MaxOperations(ValidationRule):
        def enter_document(self, node: Any, *_: Any) -> None:
            count = sum(isinstance(d, OperationDefinitionNode) for d in node.definitions)
            if count > limit:
                self.report_error(GraphQLError(f"{count} operations in one document; the limit is {limit}"))

    return MaxOperations


def _unexpected(error: GraphQLError) -> bool:
    """An error the client did not cause (a bug, a lost database): its message stays in the server's log."""
    return error.original_error is not None and not isinstance(error.original_error, GraphQLError)


class Schema(strawberry.Schema):
    def process_errors(self, errors: list[GraphQLError], execution_context: Any = None) -> None:
        """Logs server errors only: a client's malformed or refused query is answered, not logged (a flood of
        them would flood the log)."""
        super().process_errors([e for e in errors if _unexpected(e)], execution_context)


def schema(limits: Limits) -> Schema:
    return Schema(query=Query, mutation=Mutation, extensions=[
        lambda: MaxTokensLimiter(max_token_count=limits.graphql_max_tokens),
        lambda: QueryDepthLimiter(max_depth=limits.graphql_max_depth),
        lambda: MaxAliasesLimiter(max_alias_count=limits.graphql_max_aliases),
        lambda: AddValidationRules([max_operations(limits.graphql_max_operations)]),
        lambda: MaskErrors(should_mask_error=_unexpected, error_message="internal error; the server's log has the details"),
    ])


class Router(GraphQLRouter):
    """strawberry's router answering every refused request with the API's JSON error body, never a 500."""

    def decode_json(self, data: str | bytes) -> object:
        try:
            decoded = json.loads(data)
        except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested past Python's recursion limit
            raise HTTPException(400, "the body is not a JSON document in UTF-8 (or is nested too deeply)") from None
        if not isinstance(decoded, dict | list):
            raise HTTPException(400, "the body must be a JSON object: {query, variables, operationName}")
        return decoded

    async def run(self, request: Any, context: Any = strawberry.UNSET, root_value: Any = strawberry.UNSET) -> Any:
        try:
            return await super().run(request, context, root_value)
        except HTTPException as exc:
            raise ServiceError(exc.status_code, "bad_graphql_request", exc.reason) from None


def graphql_router(limits: Limits) -> GraphQLRouter:
    return Router(schema(limits), graphql_ide="graphiql", subscription_protocols=())  # no subscriptions: no WebSocket to hold open

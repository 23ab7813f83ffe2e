"""GraphQL at /graphql (strawberry): queries for models and experiments, mutations generate and feedback.
Arguments are validated by the REST request models and every resolver calls the same service layer, so
the two interfaces cannot drift apart. Resolvers run the blocking service calls in a worker thread."""

from __future__ import annotations

import asyncio
from typing import Any

import strawberry
from pydantic import ValidationError
from strawberry.fastapi import GraphQLRouter
from strawberry.types import Info

from tweetforge.serving.protocol import FeedbackRequest, GenerateRequest, sampling_of
from tweetforge.serving.service import Service, ServiceError


class RequestError(Exception):
    """Shown to the client as the GraphQL error message."""


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


async def _call(function: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return await asyncio.to_thread(function, *args, **kwargs)
    except ServiceError as exc:
        raise RequestError(f"{exc.code}: {exc.message}") from None


def _validated(request_model: Any, **fields: Any) -> Any:
    try:
        return request_model(**{k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        raise RequestError("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from None


@strawberry.type
class Query:
    @strawberry.field(description="Every registered version; loaded = in this server's memory.")
    def models(self, info: Info) -> list[Model]:
        from tweetforge.registry.versions import list_versions

        service = _service(info)
        loaded = {m.version.ref for m in service.loaded()}
        return [Model(ref=v.ref, name=v.name, version=v.version, kind=v.kind, aliases=v.aliases, authors=v.params.get("authors", []),
                      loaded=v.ref in loaded, test_bits_per_char=v.metrics.get("test", {}).get(v.dataset, {}).get("bits_per_char"))
                for v in list_versions(service.engine)]

    @strawberry.field(description="An experiment's rates with 95% intervals, P(best) and decision state.")
    async def experiment(self, info: Info, name: str) -> Experiment:
        from tweetforge.experiments.ab import ExperimentError, experiment_status

        try:
            status = await asyncio.to_thread(experiment_status, _service(info).engine, name)
        except ExperimentError as exc:
            raise RequestError(str(exc)) from None
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


schema = strawberry.Schema(query=Query, mutation=Mutation)


def graphql_router() -> GraphQLRouter:
    return GraphQLRouter(schema, graphql_ide="graphiql")

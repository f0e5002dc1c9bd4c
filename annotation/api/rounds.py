"""Rounds: list, open from imported completions, read, change, close (admin); an annotator's
progress through every round, and a round's leaderboard when an admin has turned it on."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from drf_spectacular.utils import extend_schema, extend_schema_field, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from feedback.platform.errors import DomainError
from feedback.platform.roles import HasAnyRole, IsAdmin, IsAnnotator, Role, user_has_role
from feedback.platform.strict import (
    BoundedListField,
    StrictApiView,
    StrictSerializer,
    body_strict,
)
from feedback.serving.backends import Sampling

from ..gold import round_set_gold_rate
from ..models import Round
from ..progress import annotator_progress_by_round, round_leaderboard, round_set_leaderboard
from ..pseudonyms import usernames_by_id
from ..round_selection import SELECTIONS
from ..rounds import (
    MAX_PRIORITY,
    round_close,
    round_open_for_policy,
    round_open_from_imported,
    round_progress,
    round_set_priority,
)
from ..rubrics import rubric_list
from ..selectors import round_get, round_list
from .common import ERROR, MAX_K, StrictIntegerField

# A round is opened from at most this many prompts named one by one, or tags.
MAX_PROMPT_IDS = 100_000
MAX_TAGS = 50
PROGRESS_FIELDS = (
    "tasks", "complete", "judgments", "target", "leased", "gold_tasks", "gold_judgments",
)  # fmt: skip


class RoundOutputSerializer(serializers.ModelSerializer):
    rubric = serializers.CharField(source="rubric.label")
    policy_version = serializers.CharField(
        source="policy_version.name", allow_null=True, default=None
    )
    progress = serializers.SerializerMethodField()

    class Meta:
        model = Round
        fields = [
            "id",
            "number",
            "source",
            "status",
            "k",
            "overlap",
            "seed",
            "rubric",
            "policy_version",
            "created_at",
            "closed_at",
            "progress",
            "sampling",
            "backend",
            "progress_done",
            "prompts_skipped",
            "generation_error",
            "gold_rate",
            "gold_count",
            "leaderboard_enabled",
            "leaderboard_names",
            "priority",
            "selection",
            "selection_run",
            "pool_size",
            "selection_detail",
        ]

    @extend_schema_field(
        inline_serializer(
            "RoundProgress",
            {name: serializers.IntegerField() for name in PROGRESS_FIELDS},
        )
    )
    def get_progress(self, round_: Round) -> dict[str, int]:
        return round_progress(round_=round_)


class RoundListApi(StrictApiView):
    """List rounds (newest first) with their progress, or open a round from imported completions."""

    permission_classes = [IsAdmin]

    class RoundOpenInputSerializer(StrictSerializer):
        k = StrictIntegerField(min_value=2, max_value=MAX_K, help_text="Completions per task.")
        overlap = StrictIntegerField(
            min_value=1, max_value=50, default=3, help_text="Judgments wanted per task."
        )
        tags = BoundedListField(
            child=serializers.CharField(max_length=100),
            required=False,
            max_length=MAX_TAGS,
            help_text="Only prompts carrying all these tags.",
        )
        prompt_ids = BoundedListField(
            child=StrictIntegerField(min_value=1), required=False, max_length=MAX_PROMPT_IDS
        )
        include_used = serializers.BooleanField(
            default=False, help_text="Also use prompts that are already in a round."
        )
        limit = StrictIntegerField(
            min_value=1, required=False,
            help_text="Policy rounds: use at most this many of the matching prompts, oldest first.",
        )  # fmt: skip
        rubric = serializers.PrimaryKeyRelatedField(
            queryset=rubric_list(), required=False, help_text="Default: the newest 3H."
        )
        seed = StrictIntegerField(required=False, min_value=0, max_value=2**31 - 1)
        source = serializers.ChoiceField(
            choices=["imported", "policy"],
            default="imported",
            help_text="imported: compare completions already stored; policy: the active policy "
            "generates K completions per prompt first (202, status 'generating').",
        )
        backend = serializers.ChoiceField(
            choices=["transformers", "openai", "vllm"],
            required=False,
            help_text="Generation backend for a policy round (default: GENERATION_BACKEND).",
        )
        temperature = serializers.FloatField(min_value=0, max_value=2, default=1.0)
        top_p = serializers.FloatField(min_value=0.01, max_value=1, default=1.0)
        max_new_tokens = StrictIntegerField(min_value=1, max_value=4096, default=64)
        gold_rate = serializers.FloatField(
            min_value=0, max_value=1, default=0.1,
            help_text="Share of each annotator's tasks drawn from the round's gold tasks (once "
            "an admin marks some: PUT /api/v1/tasks/{id}/gold/).",
        )  # fmt: skip
        selection = serializers.ChoiceField(
            choices=list(SELECTIONS), default="random",
            help_text="Policy rounds: random takes the first `limit` matching prompts; "
            "uncertainty generates K candidates for the pool, scores them with a reward model "
            "and keeps the `limit` prompts whose two best candidates are closest; disagreement "
            "keeps those the per-axis reward models order most differently.",
        )  # fmt: skip
        selection_run = StrictIntegerField(
            min_value=1, required=False,
            help_text="Uncertainty: the succeeded reward-model run that scores (default: the "
            "newest trained on rankings).",
        )  # fmt: skip
        pool = StrictIntegerField(
            min_value=1, required=False,
            help_text="Uncertainty or disagreement: how many matching prompts, oldest first, to "
            "generate and score (default: all of them).",
        )  # fmt: skip

    @extend_schema(responses=RoundOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        rounds = round_list()
        return Response(RoundOutputSerializer(rounds, many=True).data)

    @extend_schema(
        request=RoundOpenInputSerializer,
        responses={
            201: inline_serializer(
                "RoundOpened",
                {"round": RoundOutputSerializer(), "prompts_left_out": serializers.IntegerField()},
            ),
            400: ERROR,
        },
    )
    def post(self, request: Request) -> Response:
        data = self.RoundOpenInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        sampling = Sampling(
            temperature=values.pop("temperature"),
            top_p=values.pop("top_p"),
            max_new_tokens=values.pop("max_new_tokens"),
        )
        backend = values.pop("backend", None)
        gold_rate = values.pop("gold_rate")
        if values.pop("source") == "policy":
            values["backend"] = backend
            round_ = round_open_for_policy(**values, sampling=sampling, created_by=request.user)
            round_ = round_set_gold_rate(round_id=round_.pk, rate=gold_rate)
            return Response(
                {"round": RoundOutputSerializer(round_).data, "prompts_left_out": 0}, status=202
            )
        for name in ("limit", "pool", "selection_run"):
            if name in values:
                raise DomainError(
                    f"{name} applies to policy rounds only.",
                    fields={name: ["Only for source 'policy'; an imported round takes them all."]},
                )
        if values.pop("selection") != "random":
            raise DomainError(
                "Selection by a reward model is for policy rounds only.",
                fields={"selection": ["Only 'random' for source 'imported'."]},
            )
        round_, left_out = round_open_from_imported(**values, created_by=request.user)
        round_ = round_set_gold_rate(round_id=round_.pk, rate=gold_rate)
        return Response(
            {"round": RoundOutputSerializer(round_).data, "prompts_left_out": left_out}, status=201
        )


class RoundDetailApi(StrictApiView):
    """Read a round; PATCH changes what can change while it runs: its gold rate, its priority
    (which open round's tasks go first), and whether annotators see its leaderboard (and with
    usernames or pseudonyms)."""

    permission_classes = [IsAdmin]

    class RoundPatchSerializer(StrictSerializer):
        gold_rate = serializers.FloatField(min_value=0, max_value=1, required=False)
        leaderboard_enabled = serializers.BooleanField(
            required=False, help_text="Annotators see the round's leaderboard (off by default)."
        )
        leaderboard_names = serializers.BooleanField(
            required=False,
            help_text="The leaderboard shows usernames instead of the round's pseudonyms.",
        )
        priority = serializers.IntegerField(
            min_value=0,
            max_value=MAX_PRIORITY,
            required=False,
            help_text="Tasks of open rounds of a higher priority are handed out first (a "
            "promotion gate's side-by-side round opens at 10, others at 0).",
        )

        def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
            if not attrs:
                raise serializers.ValidationError(
                    "Give at least one of: gold_rate, leaderboard_enabled, leaderboard_names, "
                    "priority."
                )
            return attrs

    def _round(self, round_id: int) -> Round:
        round_ = round_get(round_id=round_id)
        if round_ is None:
            raise DomainError("No such round.", code="not_found", status=404)
        return round_

    @extend_schema(responses={200: RoundOutputSerializer, 404: ERROR})
    def get(self, request: Request, round_id: int) -> Response:
        return Response(RoundOutputSerializer(self._round(round_id)).data)

    @extend_schema(
        request=RoundPatchSerializer,
        responses={200: RoundOutputSerializer, 400: ERROR, 404: ERROR},
    )
    def patch(self, request: Request, round_id: int) -> Response:
        data = self.RoundPatchSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        self._round(round_id)
        if "gold_rate" in values:
            round_set_gold_rate(round_id=round_id, rate=values["gold_rate"])
        if "priority" in values:
            round_set_priority(round_id=round_id, priority=values["priority"])
        if "leaderboard_enabled" in values or "leaderboard_names" in values:
            round_set_leaderboard(
                round_id=round_id,
                enabled=values.get("leaderboard_enabled"),
                names=values.get("leaderboard_names"),
            )
        return Response(RoundOutputSerializer(self._round(round_id)).data)


class RoundCloseApi(StrictApiView):
    """Stop handing out the round's tasks; leases already held can still be submitted."""

    permission_classes = [IsAdmin]

    @extend_schema(request=None, responses={200: RoundOutputSerializer, 404: ERROR})
    def post(self, request: Request, round_id: int) -> Response:
        body_strict(request)
        return Response(RoundOutputSerializer(round_close(round_id=round_id)).data)


class MyProgressApi(StrictApiView):
    """Your progress through every open round and every round you worked in, newest first:
    tasks, your judgments and skips, the tasks you may still be given, and whether the round's
    leaderboard is on."""

    permission_classes = [IsAnnotator]

    @extend_schema(
        responses=inline_serializer(
            "MyRoundProgressRow",
            {
                "round_id": serializers.IntegerField(),
                "number": serializers.IntegerField(),
                "status": serializers.CharField(help_text="generating, open or closed."),
                "tasks": serializers.IntegerField(help_text="Tasks in the round."),
                "judged": serializers.IntegerField(help_text="Yours judged in it."),
                "skipped": serializers.IntegerField(help_text="Yours skipped in it."),
                "available": serializers.IntegerField(
                    help_text="Tasks you may still be given (0 once the round is closed)."
                ),
                "percent": serializers.IntegerField(
                    help_text="Judged and skipped over those and the available ones, 0 to 100."
                ),
                "leaderboard": serializers.BooleanField(
                    help_text="Whether the round's leaderboard is on (see its leaderboard/)."
                ),
            },
            many=True,
        )
    )
    def get(self, request: Request) -> Response:
        rows = annotator_progress_by_round(annotator=request.user)
        return Response([{**asdict(row), "percent": row.percent} for row in rows])


ESTIMATE = inline_serializer(
    "LeaderboardAgreement",
    {
        "value": serializers.FloatField(allow_null=True),
        "low": serializers.FloatField(allow_null=True),
        "high": serializers.FloatField(allow_null=True),
        "n": serializers.IntegerField(help_text="Consensus pairs it rests on."),
    },
)


class RoundLeaderboardApi(StrictApiView):
    """A round's leaderboard: each annotator's judgments and skips, and their agreement with
    the consensus of the others (a share of pairs, 95% interval), most judgments first. Open
    to everyone once an admin turns it on for the round; admins can always read it, and see
    usernames. Annotators are the round's pseudonyms unless the admin chose names; your own
    row says ``you``."""

    permission_classes = [HasAnyRole]

    @extend_schema(
        responses={
            200: inline_serializer(
                "RoundLeaderboard",
                {
                    "round": serializers.IntegerField(),
                    "enabled": serializers.BooleanField(),
                    "names": serializers.BooleanField(help_text="Usernames, not pseudonyms."),
                    "rows": inline_serializer(
                        "LeaderboardRow",
                        {
                            "rank": serializers.IntegerField(),
                            "annotator": serializers.CharField(),
                            "username": serializers.CharField(
                                required=False, help_text="Admins only."
                            ),
                            "you": serializers.BooleanField(),
                            "judged": serializers.IntegerField(),
                            "skipped": serializers.IntegerField(),
                            "agreement": ESTIMATE,
                        },
                        many=True,
                    ),
                },
            ),
            403: ERROR,
            404: ERROR,
        }
    )
    def get(self, request: Request, round_id: int) -> Response:
        round_ = round_get(round_id=round_id)
        if round_ is None:
            raise DomainError("No such round.", code="not_found", status=404)
        admin = user_has_role(request.user, Role.ADMIN)
        if not round_.leaderboard_enabled and not admin:
            raise DomainError(
                f"Round {round_.number} has no leaderboard: an admin has not turned it on.",
                code="permission_denied",
                status=403,
            )
        board = round_leaderboard(round_=round_)
        names = usernames_by_id(user_ids=[r.annotator_id for r in board]) if admin else {}
        rows = []
        for row in board:
            out = {
                "rank": row.rank,
                "annotator": row.name,
                "you": row.annotator_id == request.user.pk,
                "judged": row.judged,
                "skipped": row.skipped,
                "agreement": asdict(row.agreement),
            }
            if admin:
                out["username"] = names.get(row.annotator_id, "")
            rows.append(out)
        return Response(
            {
                "round": round_.number,
                "enabled": round_.leaderboard_enabled,
                "names": round_.leaderboard_names,
                "rows": rows,
            }
        )

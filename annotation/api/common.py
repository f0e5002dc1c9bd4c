"""Pieces every annotation route shares: the error shape, strict integers, the rubric."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from feedback.errors import error_schema

from ..models import Rubric

ERROR = error_schema()


class StrictIntegerField(serializers.IntegerField):
    """An integer that must arrive as a JSON integer: not "5", not 5.0, not true."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class RubricSerializer(serializers.ModelSerializer):
    label = serializers.CharField(read_only=True)

    class Meta:
        model = Rubric
        fields = [
            "id",
            "name",
            "version",
            "label",
            "axes",
            "flags",
            "strength_labels",
            "guidelines",
        ]

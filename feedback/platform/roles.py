"""The three roles, kept as auth groups, and the DRF permissions that check them.

Annotators take tasks and see only their own work; admins (staff) run the platform; researchers
read everything and export. A user may hold more than one role.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, Group
from rest_framework.permissions import BasePermission


class Role(StrEnum):
    ANNOTATOR = "annotator"
    ADMIN = "admin"
    RESEARCHER = "researcher"


def user_roles(user: AbstractBaseUser | AnonymousUser) -> set[Role]:
    if not user.is_authenticated:
        return set()
    cached = getattr(user, "_feedback_roles", None)
    if cached is None:
        names = set(user.groups.values_list("name", flat=True))  # type: ignore[attr-defined]
        cached = user_roles_set(user, names)
    return cached


def user_roles_set(user: AbstractBaseUser, group_names: set[str]) -> set[Role]:
    """Store the roles of a user whose group names were read with it (``platform.auth`` reads
    them with the token), so that no role check queries again."""
    roles = {role for role in Role if role.value in group_names}
    if user.is_staff:  # type: ignore[attr-defined]
        roles.add(Role.ADMIN)
    user._feedback_roles = roles  # type: ignore[attr-defined]
    return roles


def user_has_role(user: AbstractBaseUser | AnonymousUser, *roles: Role) -> bool:
    return bool(user_roles(user) & set(roles))


def role_grant(*, user: Any, role: Role) -> None:
    """Give ``user`` a role; admins are also staff so Django's own checks agree."""
    group, _ = Group.objects.get_or_create(name=role.value)
    user.groups.add(group)
    if role is Role.ADMIN and not user.is_staff:
        user.is_staff = True
        user.save(update_fields=["is_staff"])
    user.__dict__.pop("_feedback_roles", None)


class _RolePermission(BasePermission):
    roles: tuple[Role, ...] = ()
    message = "Your account does not have the role this route needs."

    def has_permission(self, request: Any, view: Any) -> bool:
        return user_has_role(request.user, *self.roles)


class IsAnnotator(_RolePermission):
    roles = (Role.ANNOTATOR,)
    message = "Only annotators take and submit tasks."


class IsAdmin(_RolePermission):
    roles = (Role.ADMIN,)
    message = "Only admins may do this."


class IsResearcherOrAdmin(_RolePermission):
    roles = (Role.RESEARCHER, Role.ADMIN)
    message = "Only researchers and admins may read this."


class HasAnyRole(_RolePermission):
    """Any of the platform's roles: a signed-in account with none (an outsider) is refused."""

    roles = (Role.ANNOTATOR, Role.RESEARCHER, Role.ADMIN)

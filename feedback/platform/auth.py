"""Token authentication in one query: the token, its user and the user's roles.

DRF's ``TokenAuthentication`` reads the token with its user (one join), and the first role
check reads the user's groups (a second query), both through the ORM, whose SQL compiler was a
tenth of an annotation request's time (``benchmarks/annotation_api.py``'s profile). Every API
request starts here, so the lookup is one hand-written statement, portable between PostgreSQL
and SQLite: the token joined to its user and, left-joined, the user's groups (a row per group,
at least one). The user is built from the row as the ORM would build it (``Model.from_db``),
and its roles are handed to ``roles.user_roles_set`` so no role check queries again.

It answers as DRF's does: the same header parsing (this class is DRF's with one method
replaced), the same 401 messages, and ``request.auth`` is the token's key (nothing here reads
the token object).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connection
from django.utils.translation import gettext_lazy as _
from rest_framework import authentication, exceptions

from .roles import user_roles_set


@lru_cache(maxsize=1)
def _lookup() -> tuple[str, list[str], list[tuple[Any, list[Any]]]]:
    """The statement, the user's field attnames in its column order, and each field's
    converters from the database's values to Python's (SQLite's 0/1 to booleans, and so on):
    built once."""
    user_model = get_user_model()
    fields = user_model._meta.concrete_fields
    user_table = user_model._meta.db_table
    membership = user_model._meta.get_field("groups").remote_field.through._meta
    group_table = user_model._meta.get_field("groups").related_model._meta.db_table
    quote = connection.ops.quote_name
    columns = ", ".join(f"u.{quote(field.column)}" for field in fields)
    sql = (
        f"SELECT {columns}, g.name FROM authtoken_token t "
        f"JOIN {quote(user_table)} u ON u.{quote(user_model._meta.pk.column)} = t.user_id "
        f"LEFT JOIN {quote(membership.db_table)} ug ON ug.user_id = t.user_id "
        f"LEFT JOIN {quote(group_table)} g ON g.id = ug.group_id "
        "WHERE t.key = %s"
    )
    table = user_model._meta.db_table
    converters = [
        (
            field,
            connection.ops.get_db_converters(field.get_col(table))
            + field.get_db_converters(connection),
        )
        for field in fields
    ]
    return sql, [field.attname for field in fields], converters


def token_user(key: str) -> Any | None:
    """The user ``key`` belongs to, its roles loaded; None for an unknown key."""
    sql, attnames, converters = _lookup()
    with connection.cursor() as cursor:
        cursor.execute(sql, [key])
        rows = cursor.fetchall()
    if not rows:
        return None
    n = len(attnames)
    values = [
        _convert(value, field, field_converters)
        for value, (field, field_converters) in zip(rows[0][:n], converters, strict=True)
    ]
    user = get_user_model().from_db(connection.alias, attnames, values)
    user_roles_set(user, {row[n] for row in rows if row[n] is not None})
    return user


def _convert(value: Any, field: Any, converters: list[Any]) -> Any:
    for converter in converters:
        value = converter(value, field, connection)
    return value


class TokenAuthentication(authentication.TokenAuthentication):
    """DRF's token authentication, its lookup one query with the roles (see the module)."""

    def authenticate_credentials(self, key: str) -> tuple[Any, str]:
        user = token_user(key)
        if user is None:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        if not user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        return (user, key)

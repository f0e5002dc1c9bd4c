"""The root URL map (wiring): each app's own routes, the OpenAPI schema and docs, the pages.

The v1 REST API is one namespace, "api", made of the base layer's routes (feedback/api_urls.py),
the annotation app's (annotation/urls.py) and the training app's (training/urls.py).
"""

from __future__ import annotations

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from feedback import api

api_v1 = [
    path("", include("feedback.api_urls")),
    path("", include("annotation.urls")),
    path("", include("training.urls")),
]

urlpatterns = [
    path("api/v1/", include((api_v1, "api"), namespace="api")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", api.ApiDocsView.as_view(url_name="schema"), name="api-docs"),
    path("", include("frontend.urls")),
]

handler404 = "frontend.views.not_found"
handler500 = "frontend.views.server_error"

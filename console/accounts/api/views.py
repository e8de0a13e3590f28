from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.viewsets import GenericViewSet

from console.accounts.api.serializers import (
    ApiKeyCreatedSerializer,
    ApiKeyCreateSerializer,
    ApiKeyLimitsSerializer,
    ApiKeySerializer,
)
from console.accounts.models import ApiKey
from console.accounts.permissions import IsUser


class ApiKeyViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, GenericViewSet):
    """Your API keys. Everyone manages their own; admins may list (`?user=`) and revoke anyone's."""

    serializer_class = ApiKeySerializer
    permission_classes = [IsUser]
    filter_backends: list[Any] = []

    def visible_keys(self) -> QuerySet[ApiKey]:
        keys = ApiKey.objects.select_related("user")
        return keys if self.request.user.is_admin else keys.filter(user=self.request.user)

    def get_queryset(self) -> QuerySet[ApiKey]:
        if getattr(self, "swagger_fake_view", False):
            return ApiKey.objects.none()
        username = self.request.query_params.get("user")
        if not username or username == self.request.user.username:
            return self.visible_keys().filter(user=self.request.user)
        if not self.request.user.is_admin:
            raise PermissionDenied("Only admins can list other users' keys.")
        return self.visible_keys().filter(user__username=username)

    def get_object(self) -> ApiKey:
        key = self.visible_keys().filter(pk=self.kwargs["pk"]).first()
        if key is None:
            raise NotFound(f"You have no API key #{self.kwargs['pk']}.")
        return key

    @extend_schema(parameters=[OpenApiParameter("user", OpenApiTypes.STR, description="Admins only: list this "
                                                "user's keys instead of your own.")])
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    @extend_schema(request=ApiKeyCreateSerializer, responses={201: ApiKeyCreatedSerializer},
                   description="Create a key for yourself. The raw key is in the answer's `key` field, once.")
    def create(self, request: Request) -> Response:
        body = ApiKeyCreateSerializer(data=request.data, context={"request": request})
        body.is_valid(raise_exception=True)
        data = body.validated_data
        key, raw = ApiKey.issue(request.user, data["name"], data.get("expires_at"), actor=request.user,
                                requests_per_minute=data.get("requests_per_minute"),
                                tokens_per_minute=data.get("tokens_per_minute"), own_limits=data["own_limits"])
        return Response({**ApiKeySerializer(key).data, "key": raw}, status=status.HTTP_201_CREATED)

    @extend_schema(request=ApiKeyLimitsSerializer, responses=ApiKeySerializer,
                   description="Admins only: give the key a budget of its own (`own_limits`, with optional "
                               "`requests_per_minute` / `tokens_per_minute`), or make it share its user's again.")
    def partial_update(self, request: Request, pk: int) -> Response:
        if not request.user.is_admin:
            raise PermissionDenied("Only admins change a key's limits; your keys share your account's budget.")
        key = self.get_object()
        body = ApiKeyLimitsSerializer(data=request.data, context={"request": request})
        body.is_valid(raise_exception=True)
        data = body.validated_data
        key.set_limits(request.user, own_limits=data["own_limits"], requests_per_minute=data.get("requests_per_minute"),
                       tokens_per_minute=data.get("tokens_per_minute"))
        return Response(ApiKeySerializer(key).data)

    def revoke_key(self, request: Request) -> ApiKey:
        key = self.get_object()
        key.revoke(actor=request.user)
        return key

    @extend_schema(responses={204: None}, description="Revoke the key (it stays listed, as revoked).")
    def destroy(self, request: Request, pk: int) -> Response:
        self.revoke_key(request)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses=ApiKeySerializer, description="Revoke the key; revoking twice is harmless.")
    def revoke(self, request: Request, pk: int) -> Response:
        return Response(ApiKeySerializer(self.revoke_key(request)).data)

from __future__ import annotations

from functools import cached_property
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError
from django.db.models import Count, Prefetch, QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer
from rest_framework.viewsets import GenericViewSet

from console.accounts.permissions import IsAdmin, ReadUserWriteMaintainer
from console.core.api import Conflict, error_response
from console.core.parsers import JSONParser
from console.registry import importing
from console.registry.api.serializers import (
    AliasEventSerializer,
    AliasMoveSerializer,
    AliasRollbackSerializer,
    AliasSerializer,
    ModelSerializer,
    ModelUpdateSerializer,
    ModelVersionSerializer,
    VersionConfigSerializer,
    VersionFromHubSerializer,
    VersionUploadSerializer,
)
from console.registry.config_schema import OPENAPI_CONFIG_SCHEMA
from console.registry.filters import ModelFilter, VersionFilter
from console.registry.models import Alias, AliasEvent, Model, ModelInUse, ModelVersion, PromotionRefused

ALIAS_MAX_LENGTH = Alias._meta.get_field("name").max_length


def get_model_or_404(name: str) -> Model:
    model = Model.objects.filter(name=name).first()
    if model is None:
        raise NotFound(f"No model named '{name}'.")
    return model


class ModelViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
                   mixins.UpdateModelMixin, mixins.DestroyModelMixin, GenericViewSet):
    """Registered models. Reading needs the user role; changes need maintainer; deleting needs admin."""

    queryset = Model.objects.select_related("owner").annotate(version_count=Count("versions")).order_by("name").prefetch_related(
        Prefetch("aliases", queryset=Alias.objects.select_related("version")))
    serializer_class = ModelSerializer
    permission_classes = [ReadUserWriteMaintainer]
    filterset_class = ModelFilter
    ordering_fields = ["name", "task", "created_at"]
    lookup_field = "name"

    def get_permissions(self) -> list[Any]:
        return [IsAdmin()] if self.action == "destroy" else super().get_permissions()

    def get_serializer_class(self) -> type[BaseSerializer]:
        return ModelUpdateSerializer if self.action == "partial_update" else ModelSerializer

    def get_object(self) -> Model:
        name = self.kwargs["name"]
        model = self.get_queryset().filter(name=name).first()
        if model is None:
            raise NotFound(f"No model named '{name}'.")
        self.check_object_permissions(self.request, model)
        return model

    def perform_create(self, serializer: BaseSerializer) -> None:
        try:
            serializer.instance = Model.register(self.request.user, **serializer.validated_data)
        except IntegrityError as exc:  # lost a race with a create of the same name
            name = serializer.validated_data["name"]
            raise serializers.ValidationError(
                {"name": f"A model named '{name}' already exists; choose another name."}, code="duplicate") from exc

    def perform_update(self, serializer: BaseSerializer) -> None:
        serializer.instance.change(self.request.user, **serializer.validated_data)

    def perform_destroy(self, instance: Model) -> None:
        try:
            instance.remove(self.request.user)
        except ModelInUse as exc:
            raise Conflict(str(exc)) from exc


class ModelScopedViewSet(GenericViewSet):
    """Views under /api/models/{name}/: the model comes from the URL."""

    permission_classes = [ReadUserWriteMaintainer]

    @cached_property
    def registry_model(self) -> Model:
        return get_model_or_404(self.kwargs["name"])

    def faking_schema(self) -> bool:
        return getattr(self, "swagger_fake_view", False)


class VersionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ModelScopedViewSet):
    """Versions of a model: upload a file (multipart) or name a hub repository (JSON); edit the config."""

    serializer_class = ModelVersionSerializer
    parser_classes = [JSONParser, MultiPartParser]  # JSON: the deep-nesting-safe one of console.core
    filterset_class = VersionFilter
    ordering_fields = ["number", "created_at"]
    lookup_field = "number"

    def get_queryset(self) -> QuerySet[ModelVersion]:
        if self.faking_schema():
            return ModelVersion.objects.none()
        return self.registry_model.versions.select_related("model", "parent", "created_by", "import_job") \
            .prefetch_related("aliases")

    def get_object(self) -> ModelVersion:
        number = self.kwargs["number"]
        version = self.get_queryset().filter(number=number).first()
        if version is None:
            raise NotFound(f"Model '{self.registry_model.name}' has no version {number}.")
        return version

    @extend_schema(
        request={"multipart/form-data": VersionUploadSerializer, "application/json": VersionFromHubSerializer},
        responses={202: ModelVersionSerializer},
        description="Upload a .zip/.tar.gz of a Hugging Face model folder or a .gguf file (multipart), or give "
                    "a hub id (JSON). Answers 202 with the new `importing` version and its import job.")
    def create(self, request: Request, name: str) -> Response:
        model, actor = self.registry_model, request.user
        try:
            if request.content_type.startswith("multipart/"):
                upload = VersionUploadSerializer(data=request.data, context={"model": model})
                upload.is_valid(raise_exception=True)
                data = upload.validated_data
                version = importing.add_version_from_upload(model, data["file"], actor, config=data.get("config"),
                                                            parent=data.get("parent"))
            else:
                hub = VersionFromHubSerializer(data=request.data)
                hub.is_valid(raise_exception=True)
                data = hub.validated_data
                version = importing.add_version_from_hub(model, data["hub_id"], actor, revision=data.get("revision"),
                                                         config=data.get("config"))
        except importing.ImportRefused as exc:
            return error_response(exc.message, code=exc.code, field=exc.field, status_code=exc.status)
        return Response(ModelVersionSerializer(version).data, status=status.HTTP_202_ACCEPTED)

    # A plain schema, not the serializer: spectacular would make every field of a PATCH body optional, and
    # this PATCH needs its one field.
    @extend_schema(request={"application/json": {
                       "type": "object", "required": ["config"],
                       "properties": {"config": {**OPENAPI_CONFIG_SCHEMA, "description": "The whole new config."}}}},
                   responses=ModelVersionSerializer,
                   description="Replace the version's config; it is validated against the config schema.")
    def partial_update(self, request: Request, name: str, number: int) -> Response:
        version = self.get_object()
        body = VersionConfigSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        version.update_config(body.validated_data["config"], request.user)
        return Response(ModelVersionSerializer(self.get_object()).data)


class AliasViewSet(mixins.ListModelMixin, ModelScopedViewSet):
    """Aliases (`staging`, `production`, …): move one to a version, delete it, read its history, roll it back."""

    serializer_class = AliasSerializer
    filter_backends: list[Any] = []

    def get_queryset(self) -> QuerySet[Alias]:
        if self.faking_schema():
            return Alias.objects.none()
        return self.registry_model.aliases.select_related("model", "version")

    def get_alias(self) -> Alias:
        name = self.kwargs["alias"]
        alias = self.get_queryset().filter(name=name).first()
        if alias is None:
            raise NotFound(f"Model '{self.registry_model.name}' has no alias '{name}'.")
        return alias

    def get_object(self) -> Alias:  # what DRF's OPTIONS (metadata) asks for
        return self.get_alias()

    def retrieve(self, request: Request, name: str, alias: str) -> Response:
        return Response(AliasSerializer(self.get_alias()).data)

    @extend_schema(request=AliasMoveSerializer, responses=AliasSerializer,
                   description="Point the alias at a ready version of this model (creating the alias if needed).")
    def update(self, request: Request, name: str, alias: str) -> Response:
        if len(alias) > ALIAS_MAX_LENGTH:
            return error_response(f"Alias names are at most {ALIAS_MAX_LENGTH} characters.", field="alias")
        body = AliasMoveSerializer(data=request.data, context={"model": self.registry_model})
        body.is_valid(raise_exception=True)
        try:
            Alias.move(self.registry_model, alias, body.validated_data["version"], request.user,
                       comment=body.validated_data["comment"], override_reason=body.validated_data["override_reason"])
        except PromotionRefused as exc:
            return error_response(exc.messages[0], code="gate_failed", field="version",
                                  status_code=status.HTTP_409_CONFLICT)
        return Response(AliasSerializer(self.get_alias()).data)

    def destroy(self, request: Request, name: str, alias: str) -> Response:
        self.get_alias().remove(request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(responses=AliasEventSerializer(many=True),
                   description="Every move of the alias, newest first: who, when, from and to which version.")
    def history(self, request: Request, name: str, alias: str) -> Response:
        events = AliasEvent.objects.filter(model=self.registry_model, alias_name=alias) \
            .select_related("from_version", "to_version", "actor")
        if not events.exists():
            raise NotFound(f"Model '{self.registry_model.name}' has no alias '{alias}' and never had one.")
        page = self.paginate_queryset(events)
        return self.get_paginated_response(AliasEventSerializer(page, many=True).data)

    @extend_schema(request=AliasRollbackSerializer, responses=AliasSerializer,
                   description="Put the alias back on the version it pointed at before its latest move.")
    def rollback(self, request: Request, name: str, alias: str) -> Response:
        self.get_alias()
        body = AliasRollbackSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            Alias.rollback(self.registry_model, alias, request.user, comment=body.validated_data["comment"])
        except DjangoValidationError as exc:
            field, messages = next(iter(exc.message_dict.items()))
            return error_response(messages[0], code="conflict", field=field, status_code=status.HTTP_409_CONFLICT)
        return Response(AliasSerializer(self.get_alias()).data)

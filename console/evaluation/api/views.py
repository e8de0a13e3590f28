from __future__ import annotations

from typing import Any

import django_filters
from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status
from rest_framework.exceptions import NotFound
from rest_framework.parsers import MultiPartParser
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.viewsets import GenericViewSet

from console.accounts.choices import Role
from console.accounts.permissions import ReadUserWriteMaintainer
from console.core.api import error_response
from console.core.filters import IntegerFilter
from console.evaluation.api.serializers import (
    DatasetSerializer,
    DatasetUploadSerializer,
    DatasetVersionSerializer,
    EvaluationResultSerializer,
    PromotionGateSerializer,
)
from console.evaluation.models import Dataset, DatasetRefused, DatasetVersion, EvaluationResult, PromotionGate


class ReadUserWriteAdmin(BasePermission):
    message = "Changing promotion gates needs the 'admin' role."

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        role = Role.USER if request.method in SAFE_METHODS else Role.ADMIN
        return bool(user and user.is_authenticated and user.has_role(role))


class DatasetViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, GenericViewSet):
    """Evaluation datasets, versioned and hashed: list, read, upload a new version (maintainer)."""

    queryset = Dataset.objects.select_related("created_by").prefetch_related("versions__created_by",
                                                                             "versions__dataset")
    serializer_class = DatasetSerializer
    permission_classes = [ReadUserWriteMaintainer]
    parser_classes = [MultiPartParser]
    filterset_fields = ["kind", "builtin"]
    ordering_fields = ["name", "created_at"]
    lookup_field = "name"

    def get_object(self) -> Dataset:
        dataset = self.get_queryset().filter(name=self.kwargs["name"]).first()
        if dataset is None:
            raise NotFound(f"No dataset named '{self.kwargs['name']}'.")
        return dataset

    @extend_schema(request={"multipart/form-data": DatasetUploadSerializer}, responses={201: DatasetVersionSerializer},
                   description="Upload a dataset file as the next version of dataset `name` (registering it on the "
                               "first upload). The file is validated; errors name their line numbers.")
    def create(self, request: Request) -> Response:
        body = DatasetUploadSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        upload = data["file"]
        limit = settings.TAUON_MAX_DATASET_BYTES
        if upload.size > limit:  # before reading it into memory
            return error_response(f"The file is {upload.size} bytes; datasets may be at most {limit} bytes "
                                  "(an admin can raise the limit); split it into smaller files.", code="too_large", field="file", status_code=413)
        try:
            version = DatasetVersion.add(data["name"], data["kind"], upload.name, upload.read(), request.user,
                                         description=data["description"])
        except DatasetRefused as exc:
            return error_response(exc.message, code=exc.code, field=exc.field, status_code=exc.status)
        return Response(DatasetVersionSerializer(version).data, status=status.HTTP_201_CREATED)


class ResultFilter(django_filters.FilterSet):
    model = django_filters.CharFilter(field_name="version__model__name", help_text="Model name.")
    version = IntegerFilter(field_name="version__number", help_text="Version number.")
    dataset = django_filters.CharFilter(field_name="dataset_version__dataset__name", help_text="Dataset name.")
    config_key = django_filters.CharFilter()

    class Meta:
        model = EvaluationResult
        fields = ["model", "version", "dataset", "config_key"]


class EvaluationResultViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, GenericViewSet):
    """Stored evaluation results: one per (model version, dataset version, config)."""

    queryset = EvaluationResult.objects.select_related("version__model", "dataset_version__dataset", "job")
    serializer_class = EvaluationResultSerializer
    filterset_class = ResultFilter
    ordering_fields = ["updated_at"]


class PromotionGateViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin,
                           GenericViewSet):
    """Promotion gates: read (user); set or remove (admin). Setting one on the same model, alias, dataset
    and metric changes it."""

    queryset = PromotionGate.objects.select_related("model", "dataset", "created_by")
    serializer_class = PromotionGateSerializer
    permission_classes = [ReadUserWriteAdmin]
    filterset_fields = ["model__name", "alias"]

    @extend_schema(request=PromotionGateSerializer, responses={201: PromotionGateSerializer})
    def create(self, request: Request) -> Response:
        body = PromotionGateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        gate = PromotionGate.put(actor=request.user, **body.validated_data)
        return Response(PromotionGateSerializer(gate).data, status=status.HTTP_201_CREATED)

    def perform_destroy(self, instance: PromotionGate) -> None:
        instance.remove(self.request.user)

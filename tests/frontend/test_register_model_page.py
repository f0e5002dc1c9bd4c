"""Registering a model from the Policies page, as an admin does in a browser: what the files say
shows beside what the name says (a folder named 7B that holds 0.1M parameters reads as 0.1M), a
base model shows no chat template, and a pickled checkpoint is refused beside the Source field."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from feedback.models import PolicyVersion
from feedback.serving.model_files import parameters_text

from ..feedback.test_register_model import CONTEXT, FOLDER, build_model, pickle_only_folder

pytestmark = pytest.mark.django_db(transaction=True)


def test_admin_registers_models_and_reads_what_their_files_say(
    sign_in, page, admin, tiny_model_path, screenshot
):
    qwen, qwen_parameters = build_model(
        tiny_model_path, "Qwen2-7B-Instruct", arch="qwen2", chat=True
    )
    build_model(tiny_model_path, "Llama-3-8B", arch="llama", chat=False)
    sign_in(admin.username)
    page.goto("/manage/policies/")

    page.get_by_label("Source").fill(str(qwen))
    page.get_by_role("button", name="Register").click()
    expect(page.locator(".messages")).to_contain_text("Registered Qwen2-7B-Instruct (candidate)")
    row = page.locator("table.policies tr", has_text="Qwen2-7B-Instruct")
    files = row.locator("td.model-files")
    size = parameters_text(qwen_parameters)
    expect(files).to_contain_text(f"{size} parameters, bfloat16, not quantized")
    expect(files).to_contain_text("chat template: yes")
    expect(files).to_contain_text(f"context: {CONTEXT} tokens")
    expect(files).not_to_contain_text("serve-only")
    # The name says 7B; the files hold a fraction of a million parameters, and the page says so.
    expect(row).to_contain_text("7B")
    expect(files.locator(".disagreement").first).to_contain_text("7B")

    page.get_by_label("Source").fill(f"{FOLDER}/Llama-3-8B")
    page.get_by_label("Name").fill("llama-base")
    page.get_by_role("button", name="Register").click()
    expect(page.locator(".messages")).to_contain_text("Registered llama-base (candidate)")
    llama = page.locator("table.policies tr", has_text="llama-base").locator("td.model-files")
    expect(llama).to_contain_text("chat template: no")
    screenshot("policies-register")

    pickled = pickle_only_folder()
    page.get_by_label("Source").fill(str(pickled))
    page.get_by_role("button", name="Register").click()
    error = page.locator("#id_source_error")
    expect(error).to_contain_text("only pickled weights (pytorch_model.bin)")
    expect(error).to_contain_text("unpickling runs code")
    source = page.get_by_label("Source")
    expect(source).to_have_attribute("aria-invalid", "true")
    expect(source).to_have_value(str(pickled))
    error.scroll_into_view_if_needed()
    screenshot("policies-register-refused")
    assert set(PolicyVersion.objects.values_list("name", flat=True)) == {
        "Qwen2-7B-Instruct",
        "llama-base",
    }

import pytest

from jfe.data.uniir import DATASET_IDS, dataset_name, format_query, format_string


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a red seven", "A red seven."),
        ('  "quoted caption"\r\n', "Quoted caption."),
        ("what is this?", "What is this?"),
        ("Stop!", "Stop!"),
        ("ends with a period.", "Ends with a period."),
        ("", ""),
        (None, ""),
        ('""', ""),
    ],
)
def test_format_string_normalises_as_uniir_does(raw, expected):
    assert format_string(raw) == expected


def test_a_query_text_after_a_prompt_keeps_its_case_and_takes_the_period():
    # UniIR embeds format_string(f"{format_string(prompt)} {query_txt}")
    assert format_query("retrieve a news image", "obama speaks") == ("Retrieve a news image.", "obama speaks.")
    assert format_query("Find it.", 'the "red" car"') == ("Find it.", 'the "red" car.')
    assert format_query("Find it.", None) == ("Find it.", None)
    assert format_query(None, "obama speaks") == (None, "Obama speaks.")
    instruction, text = format_query("retrieve a news image", "obama speaks?")
    assert f"{instruction} {text}" == format_string(f"{format_string('retrieve a news image')} obama speaks?")


def test_dataset_names_from_the_tsv_first_then_uniir_ids():
    assert DATASET_IDS["MSCOCO"] == 9 and DATASET_IDS["VisualNews"] == 0 and len(DATASET_IDS) == 10
    assert dataset_name("9") == "MSCOCO" and dataset_name("1") == "Fashion200K"
    assert dataset_name("9", {"9": "mscoco"}) == "mscoco"
    assert dataset_name("23") == "23"

"""Every finding code prep reports, with its severity and default hint: one table, so validate's report,
the rejects files, the README's list of codes and the tests all agree.

A finding is made from its code (`core.findings.finding`, `row_error`), which takes the severity and hint
from here; a raise site gives its own hint only where it knows more than the table (the field it names).
The severity is the one `prep validate` reports: a stage that drops a row for a code validate only warns
about (tokenize's `too_long`, dedup's `near_duplicate`, verify's shard checks) says `error` where it raises it.
"""

from __future__ import annotations

from dataclasses import dataclass

ERROR, WARNING, INFO = "error", "warning", "info"


@dataclass(frozen=True, slots=True)
class Code:
    """A code's severity, its family (what raises it: file, structure, ..., stage, shards) and what to do."""

    severity: str
    family: str
    hint: str


REBUILD = "rebuild the folder with the prep command that made it; never edit shards by hand"
_ENC = "re-encode the file as UTF-8 without a BOM, e.g. `iconv -f utf-16 -t utf-8 IN > OUT`"

CODES: dict[str, Code] = {
    # ---- files: bytes, lines, containers
    "empty_file": Code(ERROR, "file", "the file holds no rows; check the path or the export"),
    "utf8_bom": Code(WARNING, "file", "save the file as UTF-8 without a BOM; some loaders read the BOM as part of "
                     "the first key"),
    "utf16_encoding": Code(ERROR, "file", _ENC),
    "invalid_utf8": Code(ERROR, "file", _ENC),
    "nul_byte": Code(ERROR, "file", "the line holds NUL (0x00) bytes: the file is binary, UTF-16 or corrupted; "
                     "re-export it as UTF-8 text"),
    "blank_line": Code(WARNING, "file", "remove empty lines; some JSONL loaders stop or fail at them"),
    "bad_json": Code(ERROR, "file", "fix or remove the line; each line must hold one JSON object"),
    "bad_csv": Code(ERROR, "file", "fix the quoting on this line"),
    "csv_field_count": Code(ERROR, "file", "quote fields that contain the delimiter or a line break"),
    "unreadable_file": Code(ERROR, "file", "fix the file at the line named, or convert it to JSONL so a bad row "
                            "does not hide the rest"),
    "not_an_object": Code(ERROR, "file", "each row must be a JSON object such as {\"messages\": [...]}"),
    "unknown_format": Code(ERROR, "file", "name the format with --format (alpaca, sharegpt, openai, lf_parts, trl, "
                           "autotrain, coqa, text)"),
    "mixed_formats": Code(ERROR, "file", "keep one format per file; split the file or convert these rows"),
    "mixed_kinds": Code(ERROR, "file", "keep one kind (sft, dpo, kto, pretrain) per file; trainers take one"),
    "too_few_rows": Code(ERROR, "file", "add rows, or lower --min-rows"),
    "missing_column": Code(ERROR, "file", "fix the column name option or add the column; AutoTrain would silently "
                           "ignore it"),
    # ---- structure (JSON Schemas and the readers)
    "missing_field": Code(ERROR, "structure", "add the field"),
    "wrong_type": Code(ERROR, "structure", "give the field the type the format expects"),
    "bad_value": Code(ERROR, "structure", "use one of the allowed values"),
    "empty_value": Code(ERROR, "structure", "give this field a value or drop the row"),
    "unknown_column": Code(WARNING, "structure", "keep it with --keep-columns, map it, or remove it; prep drops it "
                           "(and counts it) when it converts or tokenizes the rows"),
    "unknown_key": Code(WARNING, "structure", "remove the key or rename it; prep ignores it, OpenAI and Together "
                        "reject it"),
    "wrong_kind": Code(ERROR, "structure", "give rows of the --kind asked for, or change --kind"),
    "bad_label": Code(ERROR, "structure", "use true or false (JSON booleans); LLaMA-Factory ignores anything else"),
    "bad_history": Code(ERROR, "structure", "write history as [[\"question\", \"answer\"], ...]"),
    "bad_turns": Code(ERROR, "structure", "give every question/answer its own turn_id"),
    "count_mismatch": Code(ERROR, "structure", "every question needs exactly one answer"),
    "bad_dialogue": Code(ERROR, "structure", "start the cell with a role prefix such as `human:`"),
    # ---- conversations
    "bad_role": Code(ERROR, "conversation", "use system, user, assistant or tool (ShareGPT: human, gpt, "
                     "function_call, observation, system)"),
    "legacy_function_call": Code(WARNING, "conversation", "use tool_calls and role \"tool\"; function_call and role "
                                 "\"function\" are deprecated"),
    "empty_conversation": Code(ERROR, "conversation", "give the row at least one user and one assistant message"),
    "empty_content": Code(ERROR, "conversation", "give the message some text, or drop it"),
    "misplaced_system": Code(ERROR, "conversation", "put the system message first, and only once"),
    "role_order": Code(ERROR, "conversation", "after an optional system message, alternate user and assistant; "
                       "tool results follow the assistant message that called the tool"),
    "unpaired_turn": Code(ERROR, "conversation", "end the conversation with a gpt turn; LLaMA-Factory drops rows "
                          "whose turns do not pair up"),
    "ends_without_answer": Code(WARNING, "conversation", "end the conversation with the assistant's answer; "
                                "trailing user or tool turns are never trained"),
    "no_assistant": Code(ERROR, "conversation", "add the assistant answer; a row without one trains nothing"),
    "nothing_to_train": Code(ERROR, "conversation", "give at least one message weight 1 (an assistant message "
                             "without a weight is trained)"),
    "bad_weight": Code(ERROR, "conversation", "use the integer 1 to train a message (any role), 0 to keep it out of "
                       "the loss"),
    "bad_content_part": Code(ERROR, "conversation", "content parts are {\"type\": \"text\", \"text\": ...} or "
                             "{\"type\": \"image_url\", \"image_url\": {\"url\": ...}}"),
    "unsupported_content": Code(ERROR, "conversation", "use text, image_url, video_url or input_audio parts (TRL: "
                                "image, video, audio)"),
    "bad_tool_call": Code(ERROR, "conversation", "write tool calls as {\"id\", \"type\": \"function\", "
                          "\"function\": {\"name\", \"arguments\"}}"),
    "bad_text_tool_call": Code(ERROR, "conversation", "a tool call written in the text (--tool-calls) does not parse: "
                               "fix its text, or read the row without --tool-calls"),
    "bad_tool_arguments": Code(ERROR, "conversation", "arguments must be a JSON object (OpenAI: encoded as a "
                               "string)"),
    "bad_tools": Code(ERROR, "conversation", "each tool is {\"type\": \"function\", \"function\": {\"name\": ...}}"),
    "duplicate_tool_call_id": Code(ERROR, "conversation", "give every tool call in a row its own id"),
    "unknown_tool_call_id": Code(ERROR, "conversation", "set tool_call_id to the id of the call this message "
                                 "answers"),
    "unanswered_tool_call": Code(ERROR, "conversation", "follow each assistant tool call with one tool message "
                                 "per call before the conversation goes on"),
    "unknown_tool": Code(ERROR, "conversation", "declare the called function in the row's tools, or fix its name"),
    "no_tools_declared": Code(WARNING, "conversation", "add the tool definitions (`tools`) so the template can show "
                              "them to the model"),
    "media_count_mismatch": Code(ERROR, "media", "use one <image>/<video>/<audio> placeholder per item in the "
                                 "images/videos/audios column, in the order they are read"),
    "bad_media": Code(ERROR, "media", "write each medium as a path relative to the dataset folder, or a data: URL"),
    "media_outside_root": Code(ERROR, "media", "keep media under the dataset's folder (or --media-root): copy the "
                               "file in rather than pointing out of it"),
    "media_missing": Code(ERROR, "media", "check the path: it is read relative to the folder of the file that names "
                          "it, or to --media-root"),
    "media_unreadable": Code(ERROR, "media", "name a file prep may read (check its permissions)"),
    "media_empty": Code(ERROR, "media", "the file holds no bytes: copy or export it again"),
    "media_corrupt": Code(ERROR, "media", "the file is cut short or damaged: copy or export it again"),
    "media_unsupported": Code(ERROR, "media", "use JPEG, PNG, WEBP, GIF, BMP or TIFF images, and video or audio files "
                              "with a video or audio stream FFmpeg reads"),
    "media_too_large": Code(ERROR, "media", "shrink or cut it, or raise --max-media-pixels, --max-media-bytes or "
                            "--max-media-seconds"),
    "media_not_local": Code(WARNING, "media", "prep does not fetch URLs, so it cannot check this one; download it and "
                            "name the file to have it checked"),
    "duplicate_media": Code(WARNING, "media", "the same medium twice in one row; drop the repeat unless it is meant"),
    # what OpenAI and Together fine-tuning take (files in OpenAI's format)
    "media_not_allowed": Code(ERROR, "media", "OpenAI and Together fine-tuning take images only: leave video and "
                              "audio out"),
    "image_not_allowed": Code(ERROR, "media", "only user messages may hold images"),
    "bad_image": Code(ERROR, "media", "images must be data URLs: data:image/jpeg|png|webp;base64,..."),
    "too_many_images": Code(ERROR, "media", "keep at most 10 images in a row"),
    "image_too_large": Code(ERROR, "media", "keep each image under 10 MB"),
    # ---- preference / feedback
    "bad_preference": Code(ERROR, "preference", "give a prompt that ends with a user turn and one assistant "
                           "answer on each side"),
    "bad_feedback": Code(ERROR, "preference", "end the conversation with the assistant answer the label judges"),
    "identical_preference": Code(ERROR, "preference", "chosen and rejected are the same: the pair teaches nothing; "
                                 "fix or drop it"),
    # ---- text hygiene
    "nul_char": Code(ERROR, "text", "remove NUL characters (\\u0000); tokenizers and C libraries cut text there"),
    "lone_surrogate": Code(ERROR, "text", "remove the unpaired UTF-16 surrogate escape (\\ud800-\\udfff); it "
                           "cannot be written as UTF-8"),
    "control_char": Code(WARNING, "text", "remove control characters other than tab and newline"),
    "zero_width_run": Code(WARNING, "text", "remove runs of zero-width characters; they are invisible but cost "
                           "tokens"),
    # ---- quality (the legacy OpenAI data tool's warnings)
    "duplicate_row": Code(WARNING, "quality", "drop the repeated row; duplicates weigh an example twice"),
    "near_duplicate": Code(WARNING, "quality", "drop the validation row or its training twin; overlap inflates "
                           "validation scores"),
    "too_long_text": Code(WARNING, "quality", "shorten or split the row, or raise --max-chars"),
    "mostly_uppercase": Code(WARNING, "quality", "check the casing; the model will learn to shout"),
    "identical_completions": Code(WARNING, "quality", "every answer is the same text: the model will learn only "
                                  "that"),
    "common_prefix": Code(WARNING, "quality", "every answer starts with the same text; remove it unless the model "
                          "should always say it"),
    "common_suffix": Code(WARNING, "quality", "every answer ends with the same text; remove it unless the model "
                          "should always say it (the template adds the end-of-turn token)"),
    # ---- tokens (--tokenizer)
    "too_long": Code(WARNING, "tokens", "shorten the row or raise --max-len; tokenize drops it, or cuts it with "
                    "--overflow truncate (or turns)"),
    "template_cannot_render": Code(ERROR, "tokens", "use --template chatml (tools, any role order) or the "
                                   "tokenizer's own template"),
    "template_not_prefix_stable": Code(ERROR, "tokens", "use a built-in --template for this data (prep template "
                                       "--list)"),
    "template_mismatch": Code(ERROR, "tokens", "use a built-in --template for this data"),
    "template_drops_content": Code(ERROR, "tokens", "use a template that renders every message and tool"),
    "template_error": Code(ERROR, "tokens", "fix the row, or use a built-in --template"),
    "unsupported_media": Code(ERROR, "tokens", "tokenize with the model's processor folder (its "
                              "preprocessor_config.json), or leave the rows with those media out"),
    "prompt_mismatch": Code(ERROR, "tokens", "check that both answers start the same way"),
    "special_token_text": Code(WARNING, "tokens", "user text contains a special-token string of the template; it "
                               "would be read as a control token"),
    # ---- readers and writers of other verbs (convert, export, tokenize, pack, mix, dedup, decontaminate)
    "too_large": Code(ERROR, "file", "split the row, or raise --max-row-bytes if rows this large are meant"),
    "too_deep": Code(ERROR, "file", "flatten the row"),
    "duplicate_key": Code(WARNING, "file", "give each key once: merge the values or rename one; JSON readers keep "
                          "only the last (with --strict-fields the row is rejected)"),
    "dropped_field": Code(ERROR, "structure", "map them, keep them with --keep-columns, or leave out --strict-fields"),
    "not_expressible": Code(ERROR, "stage", "convert to openai or trl, which hold every record kind but text"),
    "developer_as_system": Code(WARNING, "tokens", "use a template with a developer role to keep it apart"),
    "template_kwargs_unused": Code(ERROR, "tokens", "use the tokenizer's own template, or drop chat_template_kwargs"),
    "turns_dropped": Code(ERROR, "stage", "raise --max-len to keep them"),
    "truncated": Code(WARNING, "stage", "raise --max-len to keep the whole row"),
    "duplicate": Code(ERROR, "stage", "the row that stays is named in duplicate_of"),
    "contaminated": Code(ERROR, "stage", "a benchmark item in the training data inflates its scores; the row is "
                         "left out"),
    "not_sampled": Code(INFO, "stage", "ask for more of this source (SRC:N, SRC:xK) to keep more of its rows"),
    # ---- shard folders (`prep verify`; its too_long and count_mismatch are the codes above, with REBUILD)
    "bad_manifest": Code(ERROR, "shards", REBUILD),
    # ---- a model folder against the shards it was trained on (`prep verify --serving`)
    "serving_mismatch": Code(ERROR, "shards", "save the model with prep train from these shards (it writes their "
                             "template, with the template arguments as defaults), or tokenize with the model's template"),
    "serving_no_stop": Code(ERROR, "shards", "add the end-of-turn id to generation_config.json's eos_token_id (prep "
                            "train writes it), or pass it as a stop token to the server"),
    "serving_input_changed": Code(ERROR, "shards", "run verify --serving where the inputs the shards were made from "
                                  "are, unchanged (their paths as tokenize was given them)"),
    "unlisted_file": Code(WARNING, "shards", REBUILD),
    "missing_shard": Code(ERROR, "shards", REBUILD),
    "size_mismatch": Code(ERROR, "shards", REBUILD),
    "checksum_mismatch": Code(ERROR, "shards", REBUILD),
    "wrong_schema": Code(ERROR, "shards", REBUILD),
    "length_mismatch": Code(ERROR, "shards", REBUILD),
    "bad_seq_lengths": Code(ERROR, "shards", REBUILD),
    "bad_ids": Code(ERROR, "shards", REBUILD),
    "label_not_token": Code(ERROR, "shards", REBUILD),
    "id_out_of_vocab": Code(ERROR, "shards", REBUILD),
    "empty_side": Code(ERROR, "shards", REBUILD),
    "bad_media_run": Code(ERROR, "shards", REBUILD),
    "media_file_missing": Code(ERROR, "shards", "put the media file back where the manifest's media_roots say, or "
                               "rebuild the folder"),
    "media_file_changed": Code(ERROR, "shards", "restore the media file the shards were made from, or rebuild the "
                               "folder with the prep command that made it"),
}

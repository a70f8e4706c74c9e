"""The model's layer table when training starts: Lightning's ModelSummary, without a FLOPs column
it could not count."""

from lightning.pytorch.callbacks import ModelSummary
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.model_summary import (
    get_formatted_model_size,
    get_human_readable_count,
)


class LayerTable(ModelSummary):
    """Lightning's table of layers, parameters and modes, in the console and ``train.log``.

    Lightning counts FLOPs only by running the model on its ``example_input_array``. The models
    here set none, because that pass would draw from the run's random stream and change its
    numbers. Lightning would then print a FLOPs column of zeros and "Total Flops: 0". This table
    leaves them out, unless a model of yours sets an ``example_input_array``."""

    @staticmethod
    def summarize(
        summary_data,
        total_parameters,
        trainable_parameters,
        model_size,
        total_training_modes,
        total_flops=0,
        **summarize_kwargs,
    ) -> None:
        if total_flops:  # counted: Lightning's own table
            ModelSummary.summarize(
                summary_data,
                total_parameters,
                trainable_parameters,
                model_size,
                total_training_modes,
                total_flops,
                **summarize_kwargs,
            )
            return
        columns = [(name, [str(v) for v in values]) for name, values in summary_data]
        columns = [(name, values) for name, values in columns if name != "FLOPs"]
        widths = [max(len(name), *map(len, values)) for name, values in columns]
        rows = [[name for name, _ in columns], *zip(*(values for _, values in columns))]
        lines = [" | ".join(f"{c:<{w}}" for c, w in zip(row, widths)).rstrip() for row in rows]
        rule = "-" * max(map(len, lines))
        totals = {
            "Trainable params": get_human_readable_count(trainable_parameters),
            "Non-trainable params": get_human_readable_count(
                total_parameters - trainable_parameters
            ),
            "Total params": get_human_readable_count(total_parameters),
            "Total estimated model params size (MB)": get_formatted_model_size(model_size),
            "Modules in train mode": total_training_modes["train"],
            "Modules in eval mode": total_training_modes["eval"],
        }
        footer = [f"{value!s:<10} {name}" for name, value in totals.items()]
        rank_zero_info("\n" + "\n".join([lines[0], rule, *lines[1:], rule, *footer]))

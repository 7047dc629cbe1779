"""The main job (``make demo``): the seed's budget estimate and the R blog's epsilon."""

import warnings

from op_tensorflow.accounting import get_privacy_budget
from op_tensorflow.cli import compute_dp_sgd_privacy_main


def main() -> None:
    print("# The seed guide's budget estimate")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the seed's delta = 1/n warns; the warning is tested elsewhere
        get_privacy_budget(sample_size=100000, batch_size=4, num_epochs=20, noise_multiplier=1.2, target_delta=1e-5)
    print("\n# The R blog's compute_dp_sgd_privacy line")
    compute_dp_sgd_privacy_main(["--N=3989", "--batch_size=32", "--noise_multiplier=1.1", "--epochs=20"])
    compute_dp_sgd_privacy_main(
        ["--N=3989", "--batch_size=32", "--noise_multiplier=1.1", "--epochs=20", "--conversion=classic"]
    )


if __name__ == "__main__":
    main()

"""The application file spark-submit runs (SparkSubmitOperator): the CLI, inside the driver."""
import sys

from jobs.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

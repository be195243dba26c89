# The two commands of README.md. Both set up the environment first (dev/setup_env.sh: once per
# machine, ~20 min; seconds afterwards).
.PHONY: demo test test-fast env mutation

demo:  ## set up, train VT-FPN on LIP (demo data when data/LIP is absent), test it
	bash dev/run_demo.sh

test:  ## set up, run the test suite (every tier; 22-37 minutes on 2 cores, budget 20)
	bash dev/run_tests.sh

test-fast:  ## the unit tests only: no training, no runtime conversions (4.5-6.5 minutes, budget 3)
	bash dev/run_tests.sh -m "not slow and not runtime and not study" tests

env:   ## only set up the environment; prints its path
	bash dev/setup_env.sh

mutation:  ## known bugs + mutmut over every module (ARGS="--groups ..." for some)
	bash dev/run_mutation.sh $(ARGS)

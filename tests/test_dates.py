"""Acquisition dates: sensing dates from sidecars, tags and known names; processing times refused."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import write_raster
from rscbir.cli import cli
from rscbir.dates import acquisition_date, date_in_name
from rscbir.errors import DateError
from rscbir.scene import Scene

CITIES = ["abudhabi", "aguasclaras", "bercy", "bordeaux", "hongkong", "mumbai", "nantes", "paris", "pisa", "rennes"]


@pytest.mark.parametrize(
    "name, expected",
    [
        ("T31UDQ_20171107T105229_B01.tif", dt.date(2017, 11, 7)),  # current Sentinel-2 tile: sensing time
        ("S2B_MSIL2A_20190812T103031_N0213_R108_T32UMU_20190812T140215.tif", dt.date(2019, 8, 12)),
        ("LC08_L1TP_044034_20200103_20200113_01_T1_B4.TIF", dt.date(2020, 1, 3)),  # acquired, not processed
        ("m_4709963_se_14_1_20090818.tif", dt.date(2009, 8, 18)),  # NAIP
        ("S2A_OPER_PRD_MSIL1C_PDMC_20160504T163055_R094_V20160502T105917_20160502T105917.tif", dt.date(2016, 5, 2)),
    ],
)
def test_sensing_date_from_known_names(name, expected):
    assert date_in_name(name)[0] == expected


@pytest.mark.parametrize(
    "name, expected",
    [
        ("1985.tif", dt.date(1985, 1, 1)),  # an annual composite named by its year
        ("pucallpa_2020.tif", dt.date(2020, 1, 1)),
        ("tile_2048.tif", None),  # not a past year
        ("m_4709963_se_14_1.tif", None),  # other digits: not only a year
        ("1985_1990.tif", None),
    ],
)
def test_a_name_that_is_only_a_year_dates_an_annual_composite(name, expected):
    assert date_in_name(name)[0] == expected


def test_processing_time_in_a_name_is_refused(tmp_path):
    name = "S2A_OPER_MSI_L1C_TL_EPA__20160706T155721_A000849_T30UWU_B02.tif"
    assert date_in_name(name) == (None, "Sentinel-2 OPER (processing time)")
    path = write_raster(tmp_path / name, np.ones((1, 4, 4), np.uint16))
    with pytest.raises(DateError, match="--date"):
        Scene.open(path)
    assert Scene.open(path, date="20150821").date == dt.date(2015, 8, 21)
    result = CliRunner().invoke(cli, ["info", str(path)])
    assert result.exit_code == 2 and "no sensing date" in result.output and "Traceback" not in result.output


def test_several_dates_in_an_unknown_name_are_not_guessed(tmp_path):
    path = write_raster(tmp_path / "mosaic_20190101_20191231.tif", np.ones((1, 4, 4), np.uint8))
    with pytest.raises(DateError, match="several dates"):
        Scene.open(path)


def test_sidecar_wins_and_names_its_source(tmp_path):
    folder = tmp_path / "city" / "imgs_2"
    folder.mkdir(parents=True)
    write_raster(folder / "T30UWU_20170621T110651_B02.tif", np.ones((1, 4, 4), np.uint16))
    (tmp_path / "city" / "dates.txt").write_text("date_1: 20150821\ndate_2: 20170622\n")
    scene = Scene.open(folder)
    assert scene.date == dt.date(2017, 6, 22) and "dates.txt (date_2)" in scene.date_source


def test_acquisition_tag_beats_a_name(tmp_path):
    found = acquisition_date("x_20200101.tif", ["x_20200101.tif"], {"ACQUISITIONDATETIME": "2019-05-06T10:00:00Z"})
    assert found.date == dt.date(2019, 5, 6) and found.source == "tag ACQUISITIONDATETIME"


def oscd_dates(city_dir) -> dict[str, str]:
    """``date_1``/``date_2`` -> YYYYMMDD, read from a city's dates.txt as the OSCD authors wrote it."""
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in (city_dir / "dates.txt").read_text().splitlines()) if v}


@pytest.mark.realdata
def test_oscd_dates_equal_dates_txt(real_data):
    for city in CITIES:
        doc = oscd_dates(real_data / "oscd" / city)
        for k in (1, 2):
            scene = Scene.open(real_data / "oscd" / city / f"imgs_{k}", bands=["B02"])
            assert scene.date == dt.datetime.strptime(doc[f"date_{k}"], "%Y%m%d").date(), (city, k)


@pytest.mark.realdata
def test_oscd_names_without_sidecar_give_sensing_date_or_ask(real_data, tmp_path):
    """Without dates.txt, a current-style name gives its sensing date; an older one asks for --date (never 2016-07-06 for Rennes)."""
    for city in CITIES:
        doc = oscd_dates(real_data / "oscd" / city)
        for k in (1, 2):
            band = next((real_data / "oscd" / city / f"imgs_{k}").glob("*_B02.tif"))
            copy = tmp_path / city / f"imgs_{k}"
            copy.mkdir(parents=True)
            (copy / band.name).symlink_to(band)
            if "_OPER_" in band.name:
                with pytest.raises(DateError):
                    Scene.open(copy)
            else:
                assert Scene.open(copy).date.strftime("%Y%m%d") == doc[f"date_{k}"], (city, k)
